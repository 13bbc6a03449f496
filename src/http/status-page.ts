/**
 * The status page served at `/admin/`: one self-contained HTML document (inline CSS and script, no
 * external assets, works offline), kept in status-page.html so it reads and edits as HTML. It holds
 * no data; its script asks for the admin token once (a form, or `#token=…` in the URL), keeps it in
 * localStorage and polls `/admin/keys` (keys and their accounts: free-model use today, rests),
 * `/admin/usage` and `/admin/requests` every 2 s. Every value from the API goes into the DOM as
 * text, never as markup.
 *
 * Imported as text, so `bun build --compile` embeds it in the binary and nothing is read from disk
 * at run time. Bun's types declare every `.html` import as an HTMLBundle (what `Bun.serve` routes
 * take); with `type: "text"` the value is the file's text, hence the cast.
 */
import page from "./status-page.html" with { type: "text" };

export const statusPageHtml = page as unknown as string;
