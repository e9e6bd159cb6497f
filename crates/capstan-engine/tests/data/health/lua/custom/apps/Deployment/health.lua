-- A team rule on top of the rollout rules: a Deployment marked as failing its smoke test is
-- Degraded even when every replica is available.
hs = {}
local annotations = obj.metadata.annotations or {}
if annotations["example.com/smoke-test"] == "failed" then
  hs.status = "Degraded"
  hs.message = "smoke test failed for " .. obj.metadata.name
  return hs
end
if obj.status == nil or (obj.status.availableReplicas or 0) < (obj.spec.replicas or 1) then
  hs.status = "Progressing"
  hs.message = "waiting for replicas"
  return hs
end
hs.status = "Healthy"
return hs
