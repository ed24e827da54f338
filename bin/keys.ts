import { parseArgs } from 'node:util'
import * as v from 'valibot'
import { apiKeyCreate, tenantEnsure } from '../db/api-keys.ts'
import { createSql } from '../db/client.ts'
import { env, parseEnv } from '../db/env.ts'

const usage = 'usage: bun run keys create --tenant NAME'

const { positionals, values } = parseArgs({
  args: Bun.argv.slice(2),
  options: { tenant: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  allowPositionals: true,
})
if (values.help || positionals[0] !== 'create' || !values.tenant) {
  console.error(usage)
  process.exit(values.help ? 0 : 2)
}
if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(values.tenant)) {
  console.error('the tenant name takes letters, digits, "_", "." and "-", at most 63')
  process.exit(2)
}

const { DATABASE_URL } = parseEnv(v.object({ DATABASE_URL: env.databaseUrl }))
const sql = createSql(DATABASE_URL, { max: 1, applicationName: 'taskcast-keys' })
try {
  const tenant = await tenantEnsure(sql, values.tenant)
  const key = await apiKeyCreate(sql, tenant.id)
  console.error(`created an API key for tenant "${tenant.name}"; it is shown only this once:`)
  console.log(key)
} finally {
  await sql.end()
}
