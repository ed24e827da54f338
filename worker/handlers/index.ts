import type { TaskType } from '../../db/catalogue.ts'
import type { Handler } from '../handler.ts'
import { demoPrimes } from './demo-primes.ts'
import { demoSleep } from './demo-sleep.ts'
import { httpRequest } from './http-request.ts'

/** One handler per catalogued type: a type without one does not compile. */
export const handlers = {
  'demo.sleep': demoSleep,
  'demo.primes': demoPrimes,
  'http.request': httpRequest,
} satisfies { [T in TaskType]: Handler<T> }
