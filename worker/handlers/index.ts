import type { TaskType } from '../../db/catalogue.ts'
import type { Handler } from '../handler.ts'
import { demoNoop } from './demo-noop.ts'
import { demoPrimes } from './demo-primes.ts'
import { demoSleep } from './demo-sleep.ts'
import { httpRequest } from './http-request.ts'

/** One handler per catalogued type: a type without one does not compile. */
export const handlers = {
  'demo.noop': demoNoop,
  'demo.sleep': demoSleep,
  'demo.primes': demoPrimes,
  'http.request': httpRequest,
} satisfies { [T in TaskType]: Handler<T> }
