// One long-lived @cloud-copilot/iam-simulate process for bench/differential.py (issue #26).
//
// stdin: one JSON request a line
//   {"id": any, "identity": [policy, ...], "boundary": policy | null,
//    "scps": [[policy, ...] per level, root first], "rcps": [[policy, ...] per level],
//    "key_policy": policy, "principal": ARN, "action": "kms:Decrypt",
//    "resource": key ARN, "resource_account": "111122223333", "context": {key: value | [values]}}
// stdout: one JSON line a request, in order
//   {"id": ..., "decision": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied", "ignored": [keys]}
//   ("ignored": context keys the simulator dropped as not applying to the action; omitted if none)
//   or {"id": ..., "error": "message"} when the simulator refuses the request.
// "scps": [] means no SCP applies (the caller's account is in no audited organization); the
// simulator adds RCPFullAWSAccess to every RCP level itself.
import { createInterface } from 'node:readline'
import { runSimulation } from '@cloud-copilot/iam-simulate'

function levels(list, kind) {
  return (list || []).map((policies, i) => ({
    orgIdentifier: i === 0 ? 'r-root' : `ou-level${i}`,
    policies: policies.map((policy, j) => ({ name: `${kind}-${i}-${j}`, policy }))
  }))
}

async function answer(req) {
  const simulation = {
    request: {
      principal: req.principal,
      action: req.action,
      resource: { resource: req.resource, accountId: req.resource_account },
      contextVariables: req.context || {}
    },
    identityPolicies: (req.identity || []).map((policy, i) => ({ name: `identity-${i}`, policy })),
    serviceControlPolicies: levels(req.scps, 'scp'),
    resourceControlPolicies: levels(req.rcps, 'rcp'),
    resourcePolicy: req.key_policy
  }
  if (req.boundary) {
    simulation.permissionBoundaryPolicies = [{ name: 'boundary', policy: req.boundary }]
  }
  const result = await runSimulation(simulation, { simulationMode: 'Strict' })
  if (result.resultType === 'error') {
    return { id: req.id, error: JSON.stringify(result.errors).slice(0, 2000) }
  }
  const ignored = result.resultType === 'single' ? result.result.ignoredContextKeys || [] : []
  return ignored.length
    ? { id: req.id, decision: result.overallResult, ignored }
    : { id: req.id, decision: result.overallResult }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
for await (const line of rl) {
  if (!line.trim()) continue
  let out
  try {
    out = await answer(JSON.parse(line))
  } catch (err) {
    let id = null
    try {
      id = JSON.parse(line).id
    } catch {}
    out = { id, error: `exception: ${err && err.message ? err.message : String(err)}` }
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}
