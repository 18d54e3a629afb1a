/** The master's status answers, in SeaweedFS's spelling plus fields of our own. */
import type { DataNode, Topology } from './topology.js'

export function topologyStatus(topology: Topology) {
  const dcs = new Map<string, Map<string, DataNode[]>>()
  for (const node of topology.nodes()) {
    let racks = dcs.get(node.dataCenter)
    if (!racks) dcs.set(node.dataCenter, (racks = new Map()))
    let nodes = racks.get(node.rack)
    if (!nodes) racks.set(node.rack, (nodes = []))
    nodes.push(node)
  }
  let max = 0
  let free = 0
  const DataCenters = [...dcs].map(([Id, racks]) => ({
    Id,
    Racks: [...racks].map(([rackId, nodes]) => ({
      Id: rackId,
      DataNodes: nodes.map((n) => {
        const nodeFree = Math.max(0, n.volumesMax - n.volumes.size)
        if (n.alive) {
          max += n.volumesMax
          free += nodeFree
        }
        return {
          Url: n.url,
          PublicUrl: n.publicUrl,
          Volumes: n.volumes.size,
          Max: n.volumesMax,
          Free: nodeFree,
          Alive: n.alive,
          LastHeartbeatAgeMs: topology.heartbeatAgeMs(n),
        }
      }),
    })),
  }))
  return { Max: max, Free: free, DataCenters }
}

export function volumeStatuses(topology: Topology) {
  return topology.volumeIds().map((id) => {
    const info = topology.volume(id)!
    const reports = info.nodes.map((n) => n.volumes.get(id)!)
    const size = Math.max(...reports.map((r) => r.size))
    const garbage = Math.max(...reports.map((r) => r.garbageBytes))
    const reason = topology.unwritableReason(info)
    return {
      Id: id,
      Collection: info.collection,
      ReplicaPlacement: info.replication,
      Copies: info.copies,
      Size: size,
      FileCount: Math.max(...reports.map((r) => r.fileCount)),
      DeleteCount: Math.max(...reports.map((r) => r.deleteCount)),
      DeletedByteCount: garbage,
      GarbageRatio: size > 0 ? garbage / size : 0,
      ReadOnly: reports.some((r) => r.readOnly),
      Writable: reason === undefined,
      Reason: reason ?? '',
      Locations: info.nodes.map((n) => ({ url: n.url, publicUrl: n.publicUrl, alive: n.alive })),
    }
  })
}


