export { createMaster, startMaster, MASTER_VERSION, type Master, type AssignResult } from './server.js'
export { resolveMasterOptions, MASTER_DEFAULTS, type MasterOptions, type MasterInput } from './options.js'
export { Topology, type DataNode, type Heartbeat, type VolumeReport, type VolumeInfo, type Location } from './topology.js'
export { MasterState } from './state.js'
