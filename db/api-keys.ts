import { createHash, randomBytes } from 'node:crypto'
import type { Sql } from './client.ts'

/** A new API key: "tc_" and 43 base64url characters (256 random bits). Shown once, never stored. */
export function generateApiKey(): string {
  return `tc_${randomBytes(32).toString('base64url')}`
}

export function hashApiKey(key: string): Buffer {
  return createHash('sha256').update(key).digest()
}

export interface Tenant {
  id: string
  name: string
}

/** The tenant with this name, created if it does not exist yet. */
export async function tenantEnsure(sql: Sql, name: string): Promise<Tenant> {
  const [tenant] = await sql<Tenant[]>`
    insert into taskcast.tenants (id, name) values (${Bun.randomUUIDv7()}, ${name})
    on conflict (name) do update set name = excluded.name
    returning id, name`
  return tenant!
}

/** Creates a key for the tenant and returns it; only its hash is stored. */
export async function apiKeyCreate(sql: Sql, tenantId: string, key = generateApiKey()): Promise<string> {
  await sql`
    insert into taskcast.api_keys (id, tenant_id, key_hash, prefix)
    values (${Bun.randomUUIDv7()}, ${tenantId}, ${hashApiKey(key)}, ${key.slice(0, 7)})`
  return key
}

/** The tenant a live key belongs to. */
export async function apiKeyTenant(sql: Sql, key: string): Promise<Tenant | undefined> {
  const [tenant] = await sql<Tenant[]>`
    select t.id, t.name from taskcast.api_keys k join taskcast.tenants t on t.id = k.tenant_id
    where k.key_hash = ${hashApiKey(key)} and k.revoked_at is null`
  return tenant
}
