local k = import 'k.libsonnet';
function(replicas=1, team='none') [
  k.configMap('env-' + std.extVar('env'), { replicas: std.toString(replicas), team: team }),
  [
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'jsonnet-web', labels: std.extVar('labels') },
      spec: { replicas: replicas },
    },
    { apiVersion: 'v1', kind: 'List', items: [k.configMap('from-nested-list', {})] },
  ],
]
