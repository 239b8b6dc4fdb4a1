/** Server-sent events read from a fetch() body, as the gateway frames them. */

/**
 * Yields the data of each event (its `data:` lines joined) as it completes. Comment lines
 * (": " keep-alives) and other fields are skipped; CRLF and CR line ends are accepted.
 */
export async function* eventData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let heldCR = false; // a chunk ending in "\r" may be the first half of "\r\n"
  let scanFrom = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let text = (heldCR ? "\r" : "") + value;
      heldCR = text.endsWith("\r");
      if (heldCR) text = text.slice(0, -1);
      buffer += text.replace(/\r\n?/g, "\n");
      let start = 0;
      let end;
      // Only the new text can complete an event: partial images are megabytes long.
      while ((end = buffer.indexOf("\n\n", Math.max(start, scanFrom))) !== -1) {
        const data = dataOf(buffer.slice(start, end));
        start = end + 2;
        if (data !== null) yield data;
      }
      buffer = buffer.slice(start);
      scanFrom = Math.max(0, buffer.length - 1);
    }
  } finally {
    reader.releaseLock();
  }
}

function dataOf(block) {
  const lines = block.split("\n").filter((line) => line.startsWith("data:"));
  if (!lines.length) return null;
  return lines.map((line) => line.slice(line.startsWith("data: ") ? 6 : 5)).join("\n");
}
