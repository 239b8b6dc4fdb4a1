/** Element building. Text is always set as text, never parsed as HTML. */

/**
 * h("a", {href: "/", class: "button"}, "Home") builds an element. Attributes that are null,
 * undefined or false are left out, true sets an empty attribute, on* values become listeners.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  element.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

/** <option> elements for a <select>: [value, label] pairs or plain values. */
export function options(entries, selected) {
  return entries.map((entry) => {
    const [value, label] = Array.isArray(entry) ? entry : [entry, entry];
    const option = h("option", { value }, label);
    option.selected = value === selected;
    return option;
  });
}

/** Runs fn once calls stop for `ms` milliseconds (typing in a search box). */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
