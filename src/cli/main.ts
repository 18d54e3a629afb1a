#!/usr/bin/env node
/**
 * The `needlestore` command. It only parses arguments and wires: server commands start a
 * server, the others call the SDK. Results go to stdout, logs and errors to stderr.
 */
import yargs, { type CommandModule } from 'yargs'
import { hideBin } from 'yargs/helpers'
import { deleteCommand, undeleteCommand } from './delete.js'
import { downloadCommand } from './download.js'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, describeFailure, tidyUsageMessage } from './exit-codes.js'
import { compactCommand, fixReplicationCommand, rebalanceCommand } from './operations.js'
import { statusCommand } from './status.js'
import { uploadCommand } from './upload.js'
import { verifyCommand } from './verify.js'

export { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from './exit-codes.js'

// Commands with different argument types share one list; yargs checks each against its builder.
type AnyCommand = CommandModule<object, never>

const CLIENT_COMMANDS = [
  uploadCommand, downloadCommand, deleteCommand, undeleteCommand, statusCommand,
  compactCommand, rebalanceCommand, fixReplicationCommand, verifyCommand,
] as unknown as readonly AnyCommand[]

/**
 * The server commands load the servers (fastify, level, …), which takes about as long as a
 * client command's whole run. A command line whose first word names a client command does not
 * load them; any other loads everything, so help and mistakes see every command.
 */
async function serverCommands(args: readonly string[]): Promise<AnyCommand[]> {
  const first = args[0]
  if (first !== undefined && CLIENT_COMMANDS.some((c) => String(c.command).split(' ')[0] === first)) return []
  const [{ masterCommand }, { dataserverCommand }, { devCommand }] = await Promise.all([import('./master.js'), import('./dataserver.js'), import('./dev.js')])
  return [masterCommand, dataserverCommand, devCommand] as unknown as AnyCommand[]
}

const EPILOG = `Exit codes:
  ${EXIT_OK}  every operation succeeded
  ${EXIT_FAILURE}  an operation failed (upload, delete, undelete: at least one file failed; the others were still done)
  ${EXIT_USAGE}  usage error: a bad flag, a path that does not exist, a malformed file id

Every flag can also be set as a NEEDLESTORE_* environment variable (--master: NEEDLESTORE_MASTER).`

try {
  const args = hideBin(process.argv)
  const parser = yargs(args).scriptName('needlestore').env('NEEDLESTORE')
  for (const command of [...(await serverCommands(args)), ...CLIENT_COMMANDS]) parser.command(command)
  await parser
    .demandCommand(1, 'name a command; see needlestore --help')
    .strict()
    .fail((message, err) => {
      if (err) throw err
      process.stderr.write(`needlestore: ${tidyUsageMessage(message)}\n`)
      process.exit(EXIT_USAGE)
    })
    .epilog(EPILOG)
    .help()
    .wrap(null)
    .parseAsync()
} catch (err) {
  const failure = describeFailure(err)
  if (!failure) throw err
  process.stderr.write(`needlestore: ${failure.message}\n`)
  process.exit(failure.exitCode)
}
