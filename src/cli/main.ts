#!/usr/bin/env node
/**
 * The `needlestore` command. It only parses arguments and wires: server commands start a
 * server, the others call the SDK. Results go to stdout, logs and errors to stderr.
 */
import yargs from 'yargs'
import { hideBin } from 'yargs/helpers'
import { isNeedleError } from '../common/errors.js'
import { dataserverCommand } from './dataserver.js'
import { devCommand } from './dev.js'
import { masterCommand } from './master.js'

/** Exit codes scripts can rely on. */
export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

try {
  await yargs(hideBin(process.argv))
    .scriptName('needlestore')
    .env('NEEDLESTORE')
    .command(masterCommand)
    .command(dataserverCommand)
    .command(devCommand)
    .demandCommand(1, 'name a command; see needlestore --help')
    .strict()
    .fail((message, err) => {
      if (err) throw err
      process.stderr.write(`needlestore: ${message}\n`)
      process.exit(EXIT_USAGE)
    })
    .help()
    .parseAsync()
} catch (err) {
  if (isNeedleError(err)) {
    process.stderr.write(`needlestore: ${err.message}\n`)
    process.exit(err.code === 'NS_ERR_BAD_OPTION' ? EXIT_USAGE : EXIT_FAILURE)
  }
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'EADDRINUSE' || code === 'EACCES') {
    process.stderr.write(`needlestore: ${(err as Error).message}\n`)
    process.exit(EXIT_FAILURE)
  }
  throw err
}
