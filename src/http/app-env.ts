/** The Hono environment every admin and status route shares: what the app's middleware sets. */
export type AppEnv = { Variables: { requestId: string } };
