// The official Node SDK (npm `telnyx`, pinned in package.json) against a running callvault:
// recordings filters, retrieve, an application with every field, partial update, list filters,
// webhook deliveries, and an unknown filter. Reads its input as JSON from argv[2], prints the
// results as one JSON object; tests/test_node_sdk.py drives it and checks the results.
import Telnyx from "telnyx";

const input = JSON.parse(process.argv[2]);
const client = new Telnyx({ apiKey: input.apiKey, baseURL: input.baseURL, maxRetries: 0 });
const out = { filters: {}, errors: {} };

async function ids(filter) {
  const found = [];
  for await (const item of client.recordings.list({ filter, "page[size]": 250 })) found.push(item.id);
  return found;
}

for (const [name, filter] of Object.entries(input.filters)) out.filters[name] = await ids(filter);
const recording = (await client.recordings.retrieve(input.recordingId)).data;
out.recording = recording;

const created = (await client.callControlApplications.create(input.application)).data;
out.created = created;
const updated = (
  await client.callControlApplications.update(created.id, {
    application_name: "node-renamed",
    webhook_event_url: input.application.webhook_event_url,
    dtmf_type: "Inband",
  })
).data;
out.updated = updated;
out.listedByName = [];
for await (const app of client.callControlApplications.list({
  filter: { application_name: { contains: "node-renamed" } },
})) out.listedByName.push(app.id);

out.deliveries = [];
for await (const delivery of client.webhookDeliveries.list({ filter: { status: { eq: "failed" } } }))
  out.deliveries.push(delivery.id);

try {
  await client.recordings.list({ filter: { form: "x" } });
  out.errors.unknownFilter = null;
} catch (error) {
  out.errors.unknownFilter = { status: error.status, errors: error.error?.errors };
}
console.log(JSON.stringify(out));
