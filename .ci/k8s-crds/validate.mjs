// Validates custom resources, given as JSON documents on stdin (an array), against the schemas
// kubernetes-models generated from the Prometheus Operator's and the Gateway API's CRDs:
// types, required members, enumerations and patterns. Those CRD schemas do not forbid unknown
// members, so neither does this check (see k8s/README.md). Prints one line per document and
// exits 1 if any is invalid or of a kind it does not know.
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute";

const models = {
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "gateway.networking.k8s.io/v1/HTTPRoute": HTTPRoute,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = 0;
for (const doc of JSON.parse(input)) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const name = `${doc.kind.toLowerCase()}/${doc.metadata?.name}`;
  const Model = models[key];
  if (!Model) {
    console.log(`${name}: no schema for ${key}`);
    failed++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`${name}: valid (${key})`);
  } catch (e) {
    console.log(`${name}: INVALID: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
