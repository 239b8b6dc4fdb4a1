/** Catalog records in plain words: prices, capability descriptors, modalities. */

const BILLED = {
  output_image: "of output",
  input_image: "of input images",
  input_reference: "per reference image",
  input_text: "of prompt text",
  output_text: "of output text",
  input_font: "per font",
};

/**
 * A pricing line in plain words, worded as `imagegate models` words it:
 * "$0.03 per megapixel of output", "$0.002 per reference image", "$0.001 per request",
 * "$0.03 for the first megapixel of each image, then $0.015 per megapixel of output
 * (1 megapixel = 1,000,000 pixels)".
 */
export function describePrice(line) {
  const cost = `$${plainNumber(line.cost_usd)}`;
  let text;
  if (line.billable === "input_reference") text = `${cost} per reference image`;
  else if (line.unit === "request") text = `${cost} per request`;
  else text = `${cost} per ${line.unit} ${BILLED[line.billable] ?? `of ${line.billable}`}`;
  if (line.first_unit_usd != null) {
    text = `$${plainNumber(line.first_unit_usd)} for the first ${line.unit} of each image, then ${text}`;
  }
  if (line.pixels_per_megapixel != null) {
    text += ` (1 megapixel = ${line.pixels_per_megapixel.toLocaleString("en-US")} pixels)`;
  }
  return line.variant ? `${text} (${line.variant})` : text;
}

/** A number without exponent notation: 5e-7 → "0.0000005". */
export function plainNumber(value) {
  const text = String(value);
  const match = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(text);
  if (!match) return text;
  const [, sign, lead, rest = "", exp] = match;
  const digits = lead + rest;
  const exponent = Number(exp);
  if (exponent < 0) return `${sign}0.${"0".repeat(-exponent - 1)}${digits}`;
  const whole = digits.slice(0, exponent + 1).padEnd(exponent + 1, "0");
  const fraction = digits.slice(exponent + 1);
  return sign + (fraction ? `${whole}.${fraction}` : whole);
}

/** Labels of the request fields a descriptor can describe, in the order pages show them. */
const PARAMETER_LABELS = {
  resolution: "Resolutions",
  aspect_ratio: "Aspect ratios",
  size: "Size",
  quality: "Quality",
  output_format: "Output formats",
  background: "Backgrounds",
  output_compression: "Output compression",
  n: "Images per request",
  input_references: "Reference images",
  seed: "Seed",
};

/** Parameter keys in display order: known fields first, then any others as listed. */
export function orderedKeys(parameters) {
  const known = Object.keys(PARAMETER_LABELS).filter((key) => key in parameters);
  return [...known, ...Object.keys(parameters).filter((key) => !(key in PARAMETER_LABELS))];
}

export function parameterLabel(key) {
  return PARAMETER_LABELS[key] ?? key.replaceAll("_", " ").replace(/^./, (c) => c.toUpperCase());
}

/** A capability descriptor as text: "512, 1K, 2K", "1–10", "up to 16", "supported". */
export function describeDescriptor(key, descriptor) {
  switch (descriptor.type) {
    case "enum":
      return descriptor.values.join(", ");
    case "range":
      return describeRange(key, descriptor);
    case "boolean":
      if (key === "seed") return "supported (same seed, same image)";
      if (key === "size") return "explicit pixel sizes such as 1024x1024";
      return "supported";
    default:
      return JSON.stringify(descriptor);
  }
}

function describeRange(key, { min, max }) {
  if (key === "input_references") {
    if (max === 0) return "none";
    return min > 0 ? `${min} to ${max} (required)` : `up to ${max}`;
  }
  if (key === "n" && min === max) return `exactly ${min}`;
  return min === max ? String(min) : `${min}–${max}`;
}

export function describeModalities(list) {
  return list.length ? list.join(", ") : "none";
}

/** "2026-09-21" from unix seconds; empty for 0 (unknown). */
export function describeDate(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().slice(0, 10) : "";
}
