/**
 * Replica placement strings, as in SeaweedFS: three digits `xyz` where x is the number of copies
 * in other data centers, y in other racks of the same data center, z on other servers of the
 * same rack. `000` is one copy; `002` is three copies on three servers of one rack.
 */
import { NeedleError } from './errors.js'

export interface Placement {
  readonly otherDataCenters: number
  readonly otherRacks: number
  readonly sameRack: number
}

const PLACEMENT = /^[0-9]{3}$/

export function parsePlacement(text: string): Placement {
  if (!PLACEMENT.test(text)) {
    throw new NeedleError('NS_ERR_BAD_OPTION', `replication ${JSON.stringify(text)} must be three digits "xyz", for example "002"`)
  }
  return { otherDataCenters: Number(text[0]), otherRacks: Number(text[1]), sameRack: Number(text[2]) }
}

/** The single byte stored in a volume's superblock. */
export function placementToByte(p: Placement): number {
  return p.otherDataCenters * 100 + p.otherRacks * 10 + p.sameRack
}

export function placementFromByte(byte: number): Placement {
  return parsePlacement(String(byte).padStart(3, '0'))
}

export function formatPlacement(p: Placement): string {
  return `${p.otherDataCenters}${p.otherRacks}${p.sameRack}`
}

/** How many copies a placement asks for: the first one plus x + y + z. */
export function copyCount(p: Placement): number {
  return 1 + p.otherDataCenters + p.otherRacks + p.sameRack
}

/** copyCount of a placement in its superblock byte, with arithmetic only (the write path asks). */
export function copyCountOfByte(byte: number): number {
  return 1 + Math.floor(byte / 100) + (Math.floor(byte / 10) % 10) + (byte % 10)
}
