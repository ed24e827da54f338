// The scratch PostgreSQL database a Postgres-backed peer may wipe and set up.
import pg from "pg";

export function databaseUrl(defaultName) {
  return process.env.DATABASE_URL ?? `postgres://postgres@127.0.0.1:5432/${defaultName}`;
}

// Connects to `url`, creating the database first when it does not exist yet (SQLSTATE 3D000), so a
// peer can run alone without a setup step.
async function connect(url) {
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    return client;
  } catch (error) {
    if (error.code !== "3D000") throw error;
    const target = new URL(url);
    const name = decodeURIComponent(target.pathname.slice(1));
    const admin = new URL(url);
    admin.pathname = "/postgres";
    const adminClient = new pg.Client({ connectionString: admin.toString() });
    await adminClient.connect();
    try {
      await adminClient.query(`create database ${pg.Client.prototype.escapeIdentifier(name)}`);
    } catch (createError) {
      // Another run may have created it in the meantime.
      if (createError.code !== "42P04") throw createError;
    } finally {
      await adminClient.end();
    }
    const retry = new pg.Client({ connectionString: url });
    await retry.connect();
    return retry;
  }
}

export async function withClient(url, fn) {
  const client = await connect(url);
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export function dropSchema(url, schema) {
  return withClient(url, (client) =>
    client.query(`drop schema if exists ${pg.Client.prototype.escapeIdentifier(schema)} cascade`),
  );
}

// A single connection for the producer's "how many jobs are not finished yet" checks, kept apart
// from the library's pool so the checks never queue behind the adds.
export async function openCounter(url, sql, params = []) {
  const client = await connect(url);
  return {
    async count() {
      const { rows } = await client.query(sql, params);
      return Number(rows[0].n);
    },
    close: () => client.end(),
  };
}
