/** The master's dashboard at `/`: the topology, volumes and replica health as one HTML page. */
import type { Topology } from './topology.js'
import { topologyStatus, volumeStatuses } from './status.js'

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

export function renderDashboard(version: string, topology: Topology, waiting: boolean): string {
  const topo = topologyStatus(topology)
  const servers = topo.DataCenters.flatMap((dc) =>
    dc.Racks.flatMap((rack) =>
      rack.DataNodes.map(
        (n) => `<tr><td>${escape(dc.Id)}</td><td>${escape(rack.Id)}</td><td>${escape(n.Url)}</td><td>${n.Alive ? 'alive' : '<b>dead</b>'}</td><td>${n.Volumes} / ${n.Max}</td><td>${(n.LastHeartbeatAgeMs / 1000).toFixed(1)} s</td></tr>`,
      ),
    ),
  )
  const volumes = volumeStatuses(topology).map(
    (v) =>
      `<tr><td>${v.Id}</td><td>${escape(v.Collection)}</td><td>${v.ReplicaPlacement}</td><td>${v.Locations.map((l) => escape(l.url) + (l.alive ? '' : ' (dead)')).join(', ')}</td><td>${v.Size}</td><td>${v.FileCount}</td><td>${(v.GarbageRatio * 100).toFixed(1)} %</td><td>${v.Writable ? 'writable' : escape(v.Reason)}</td></tr>`,
  )
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>needlestore master</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head>
<body><h1>needlestore master</h1><p>${escape(version)}${waiting ? ' — waiting for data servers to report after a restart' : ''}. Free volume slots: ${topo.Free} of ${topo.Max}.</p>
<h2>Data servers</h2><table><tr><th>data center</th><th>rack</th><th>server</th><th>state</th><th>volumes</th><th>last heartbeat</th></tr>${servers.join('')}</table>
<h2>Volumes</h2><table><tr><th>id</th><th>collection</th><th>replication</th><th>copies</th><th>bytes</th><th>files</th><th>garbage</th><th>state</th></tr>${volumes.join('')}</table>
</body></html>
`
}
