/** The status page (placeholder until the real page lands). */
export const statusPageHtml = `<!doctype html><html><head><meta charset="utf-8"><title>openrouter-proxy</title></head><body><h1>openrouter-proxy</h1></body></html>`;
