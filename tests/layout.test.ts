import { describe, expect, test } from 'bun:test'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'

const root = resolve(import.meta.dir, '..')
const transpiler = new Bun.Transpiler({ loader: 'ts' })

/** Every local import of the .ts files under `dir`, as repository-relative paths. */
function localImports(dir: string): Array<{ file: string; target: string }> {
  return readdirSync(join(root, dir), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts'))
    .flatMap((file) => {
      const path = join(root, dir, file)
      return transpiler.scanImports(readFileSync(path, 'utf8'))
        .filter((entry) => entry.path.startsWith('.'))
        .map((entry) => ({ file: relative(root, path), target: relative(root, resolve(dirname(path), entry.path)) }))
    })
}

const crossings = (dir: string, allowed: string[]) =>
  localImports(dir).filter(({ target }) => !allowed.some((prefix) => target.startsWith(`${prefix}/`)))

describe('module boundaries', () => {
  test('api/ imports only api/, db/, observability/ and lifecycle/', () => {
    expect(crossings('api', ['api', 'db', 'observability', 'lifecycle'])).toEqual([])
  })

  test('worker/ imports only worker/, db/, observability/ and lifecycle/', () => {
    expect(crossings('worker', ['worker', 'db', 'observability', 'lifecycle'])).toEqual([])
  })

  test('db/, observability/ and lifecycle/ import nothing local beyond themselves', () => {
    expect(crossings('db', ['db'])).toEqual([])
    expect(crossings('observability', ['observability'])).toEqual([])
    expect(crossings('lifecycle', ['lifecycle'])).toEqual([])
  })

  test('SQL is written only in db/', () => {
    const sqlOutsideDb = ['api', 'worker', 'observability', 'lifecycle'].flatMap((dir) =>
      readdirSync(join(root, dir), { recursive: true, encoding: 'utf8' })
        .filter((file) => file.endsWith('.ts'))
        .filter((file) => /\bsql`|\.unsafe\(/.test(readFileSync(join(root, dir, file), 'utf8')))
        .map((file) => join(dir, file)))
    expect(sqlOutsideDb).toEqual([])
  })
})
