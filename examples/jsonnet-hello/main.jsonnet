// A ConfigMap and a Deployment generated from one small function; `env` comes from a TLA
// (spec.source.directory.jsonnet.tlas) so one file serves every environment.
function(env='dev', replicas=1)
  local name = 'hello-' + env;
  local labels = { app: name, 'app.kubernetes.io/part-of': 'capstan-examples' };
  [
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: name, labels: labels },
      data: { 'index.html': '<h1>Hello from Jsonnet (' + env + ')</h1>' },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: name, labels: labels },
      spec: {
        replicas: replicas,
        selector: { matchLabels: { app: name } },
        template: {
          metadata: { labels: labels },
          spec: {
            containers: [{
              name: 'web',
              image: 'ghcr.io/capstan-examples/static-web:1.0.0',
              ports: [{ name: 'http', containerPort: 8080 }],
              volumeMounts: [{ name: 'content', mountPath: '/srv' }],
            }],
            volumes: [{ name: 'content', configMap: { name: name } }],
          },
        },
      },
    },
  ]
