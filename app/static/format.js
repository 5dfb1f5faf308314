// Message text as formatting: the subset of Markdown that README.md ("The chat
// page") documents, rendered by markdown-it with raw HTML off, then kept to
// that subset by DOMPurify (tags, attributes and URL schemes allowed by name),
// which returns nodes: no HTML string of ours ever reaches the DOM.
//
// **bold**, *italics* (or _italics_), ~~strikethrough~~, `inline code`, fenced
// code blocks (```), [links](https://example.org) and bare URLs, > quotes,
// and lists; a line break is a line break. Links are http, https or mailto
// only, and open in a new tab without the page as their opener. Headings,
// tables and HTML stay text, and an image is only its link. The server stores
// and searches the text as it was typed.
import markdownit from "./vendor/markdown-it.js";
import DOMPurify from "./vendor/purify.js";

const SCHEMES = /^(?:https?:|mailto:)/i;

const md = markdownit("zero", { html: false, linkify: true, breaks: true }).enable([
  "linkify",                                          // core: bare URLs become links
  "code", "fence", "blockquote", "list",              // blocks
  "newline", "escape", "backticks", "strikethrough", "emphasis", "link", "autolink",
  "entity",                                           // inline
]);
md.validateLink = (url) => SCHEMES.test(url.trim());

const ALLOWED = {
  ALLOWED_TAGS: ["p", "br", "strong", "em", "s", "code", "pre", "a", "blockquote", "ul", "ol",
                 "li"],
  ALLOWED_ATTR: ["href", "start"],
  ALLOWED_URI_REGEXP: SCHEMES,
  RETURN_DOM_FRAGMENT: true,
};

// `text` formatted, as nodes to put in an element. Every link opens in a new
// tab that cannot reach back to this page (set here, on the sanitized nodes).
export function formatted(text) {
  // (trimmed: no line break after the last block, as the text had none)
  const nodes = DOMPurify.sanitize(md.render(text).trim(), ALLOWED);
  for (const link of nodes.querySelectorAll("a")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer nofollow";
  }
  return nodes;
}
