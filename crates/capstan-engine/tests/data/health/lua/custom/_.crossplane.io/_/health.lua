-- Generic Crossplane managed resource: Synced and Ready conditions.
local hs = { status = "Progressing", message = "Waiting for the resource to be created" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local ready, synced
for i, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then ready = condition end
  if condition.type == "Synced" then synced = condition end
end
if synced ~= nil and synced.status == "False" then
  hs.status = "Degraded"
  hs.message = synced.message or synced.reason
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = string.format("%s is ready (%d conditions)", obj.kind, #obj.status.conditions)
  return hs
end
if ready ~= nil then
  hs.message = ready.reason
end
return hs
