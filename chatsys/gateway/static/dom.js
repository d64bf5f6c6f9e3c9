// DOM helpers. Safety: everything that comes from the network reaches the page through el(), as
// text nodes or attribute values; nothing is ever parsed as HTML.

export const $ = (id) => document.getElementById(id);

/** A DOM element; strings among the children become text nodes, never markup. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}
