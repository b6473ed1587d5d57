// Drives hookhost's dashboard in the system Chromium with playwright-core.
// Run by tests/tests/ui.rs, which starts the server and a receiver and
// checks afterwards what the clicks did. Arguments come from the environment:
//   HOOKHOST_URL        the server (http://127.0.0.1:PORT)
//   HOOKHOST_TOKEN      the admin token
//   DELIVERY_ID         a delivered delivery the receiver got
//   SUBSCRIPTION_ID     its subscription (disabled at the end)
//   PLAYWRIGHT_DIR      the folder whose node_modules holds playwright-core
//   SCREENSHOTS         where to write one screenshot per page
//   CHROMIUM            the browser (default /usr/bin/chromium)
import { env, shot, step, withPage, PATIENCE } from "./browser.mjs";

const url = env("HOOKHOST_URL");
const token = env("HOOKHOST_TOKEN");
const deliveryId = env("DELIVERY_ID");
const subscriptionId = env("SUBSCRIPTION_ID");

await withPage(async (page) => {
  step("a wrong token is refused with a message");
  await page.goto(`${url}/ui`);
  await page.screenshot(shot("login"));
  await page.getByLabel("Admin token").fill("not-the-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#login-error", { hasText: "refused" }).waitFor();
  if (page.url().includes("not-the-token")) throw new Error("the token reached the URL");

  step("sign in; the delivery the receiver got is listed");
  await page.getByLabel("Admin token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  const listed = page.locator(`#delivery-table tr[data-delivery="${deliveryId}"]`);
  await listed.waitFor();
  if (!(await listed.textContent()).includes("delivered")) {
    throw new Error(`delivery row: ${await listed.textContent()}`);
  }
  if (page.url().includes(token)) throw new Error("the token reached the URL");
  await page.screenshot(shot("deliveries"));

  step("recover the refused subscription's dead delivery");
  await page.getByText("Recover a subscription's failed deliveries").click();
  await page.getByLabel("Subscription", { exact: true }).first().waitFor();
  await page.locator("#recover-subscription").selectOption("refusing");
  await page.getByRole("button", { name: "Recover" }).click();
  await page.locator("#recover-message", { hasText: "1 re-sent" }).waitFor();

  step("a time filter after the delivery hides it, one before shows it");
  const hour = 3600 * 1000;
  const local = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
  await page.getByLabel("Created from").fill(local(Date.now() + hour));
  await page.getByRole("button", { name: "Show" }).click();
  await page.locator("#delivery-empty").waitFor();
  await page.getByLabel("Created from").fill(local(Date.now() - hour));
  await page.getByRole("button", { name: "Show" }).click();
  await listed.waitFor();

  step("open its attempts: one, answered 200");
  await listed.getByRole("button", { name: /Details/ }).click();
  const attempts = page.locator("#attempt-table tbody tr");
  await page.waitForFunction(
    (id) => document.querySelector("#delivery-detail")?.dataset.delivery === id,
    deliveryId,
  );
  if ((await attempts.count()) !== 1) throw new Error(`attempts: ${await attempts.count()}`);
  if (!(await attempts.first().textContent()).includes("200")) {
    throw new Error(`attempt: ${await attempts.first().textContent()}`);
  }
  await page.locator("#request summary").click();
  await page.locator("#request-note", { hasText: "exactly as sent" }).waitFor();
  await page.locator("#request-headers tr", { hasText: deliveryId }).waitFor();
  if (!(await page.locator("#request-body").textContent()).includes('"hash"')) {
    throw new Error("the request body is not the signed envelope");
  }
  await page.screenshot(shot("delivery"));

  step("re-send it; the second attempt appears without a reload");
  await page.getByRole("button", { name: "Re-send" }).click();
  await page.waitForFunction(
    () =>
      document.querySelectorAll("#attempt-table tbody tr").length === 2 &&
      document.querySelector("#delivery-detail").dataset.status === "delivered",
    null,
    { timeout: PATIENCE },
  );

  step("create a subscription: a bad URL is named next to its field, then it is made");
  await page.getByRole("button", { name: "Subscriptions" }).click();
  await page.getByRole("button", { name: "New subscription" }).click();
  await page.getByLabel("Id", { exact: true }).fill("made-in-the-page");
  await page.getByLabel("Endpoint URL").fill("ftp://nowhere/x");
  await page.getByLabel("Envelope", { exact: true }).selectOption("plain");
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator("#sub-url-error", { hasText: "url" }).waitFor();
  await page.screenshot(shot("subscription-form"));
  await page.getByLabel("Endpoint URL").fill(`${url}/sink`);
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator('#subscription-table tr[data-subscription="made-in-the-page"]').waitFor();

  step("edit it: the form comes filled, the new endpoint is saved and listed");
  await page.getByRole("button", { name: "Edit made-in-the-page" }).click();
  await page.locator("#subscription-form-title", { hasText: "Edit subscription made-in-the-page" }).waitFor();
  const urlField = page.getByLabel("Endpoint URL");
  if ((await urlField.inputValue()) !== `${url}/sink`) throw new Error("the edit form is not filled");
  await urlField.fill("not a url");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#sub-url-error", { hasText: "url" }).waitFor();
  await urlField.fill(`${url}/edited`);
  await page.getByRole("button", { name: "Save" }).click();
  await page
    .locator('#subscription-table tr[data-subscription="made-in-the-page"]', { hasText: `${url}/edited` })
    .waitFor();

  step("event types: the catalog is listed; a test event goes to one subscription and is delivered");
  await page.getByRole("button", { name: "Event types" }).click();
  await page.locator('#event-type-table tr[data-type="alarm"]').waitFor();
  const testForm = page.locator("#test-form");
  await testForm.getByLabel("Subscription").selectOption("refusing");
  await testForm.getByLabel("Event type").selectOption("alarm");
  const sample = await testForm.getByLabel("Data (JSON; starts as the type's catalog sample)").inputValue();
  if (!JSON.parse(sample).location_id) throw new Error(`not the alarm sample: ${sample}`);
  await testForm.getByRole("button", { name: "Send test event" }).click();
  const sent = page.locator("#test-message", { hasText: "Sent to refusing as delivery" });
  await sent.waitFor();
  await page.screenshot(shot("event-types"));
  await sent.getByRole("link").click();
  await page.locator("#delivery-detail", { hasText: "delivered" }).waitFor({ timeout: PATIENCE });

  step("disable the subscription");
  await page.getByRole("button", { name: "Subscriptions" }).click();
  const sub = page.locator(`#subscription-table tr[data-subscription="${subscriptionId}"]`);
  await sub.waitFor();
  await sub.getByRole("button", { name: `Disable ${subscriptionId}` }).click();
  await sub.getByRole("button", { name: `Enable ${subscriptionId}` }).waitFor();
  await page.screenshot(shot("subscriptions"));

  step("plugins: upload the alarm router; a file that is no component is refused");
  await page.getByRole("button", { name: "Plugins" }).click();
  await page.locator('#plugin-table tr[data-plugin="alarm-filter"]').waitFor();
  await page.getByLabel("Component").setInputFiles({
    name: "broken.wasm",
    mimeType: "application/wasm",
    buffer: Buffer.from("not a component"),
  });
  await page.getByRole("button", { name: "Upload" }).click();
  await page.locator("#upload-message", { hasText: "422" }).waitFor();
  await page.getByLabel("Component").setInputFiles(env("ROUTER_WASM"));
  await page.getByLabel("Name (default: the file's)").fill("alarm-router");
  await page.getByRole("button", { name: "Upload" }).click();
  await page.locator("#upload-message", { hasText: "serving" }).waitFor();
  await page.locator('#plugin-table tr[data-plugin="alarm-router"]').waitFor();

  step("plugins: try the alarm filter on the catalog's alarm sample");
  await page.getByLabel("Plugin", { exact: true }).selectOption("alarm-filter");
  await page.getByLabel("Start from a sample").selectOption({ label: "bikeep: alarm" });
  const eventText = await page.getByLabel("Event", { exact: true }).inputValue();
  if (JSON.parse(eventText).type !== "alarm") throw new Error(`sample: ${eventText}`);
  // Bad JSON is named next to its field, and nothing is run.
  await page.getByLabel("Config (JSON; empty for none)").fill("{categories: ");
  await page.getByRole("button", { name: "Run" }).click();
  await page.locator("#try-config-error", { hasText: "Not valid JSON" }).waitFor();
  const decide = async (config) => {
    await page.getByLabel("Config (JSON; empty for none)").fill(config);
    await page.getByRole("button", { name: "Run" }).click();
    await page.waitForFunction(() => document.querySelector("#try-result").dataset.state === "done");
    const decision = JSON.parse(await page.locator("#try-result").textContent());
    await page.evaluate(() => delete document.querySelector("#try-result").dataset.state);
    return decision;
  };
  const kept = await decide('{"categories": ["security", "technical"]}');
  const dropped = await decide('{"categories": ["no-such-category"]}');
  if (kept.filter?.keep !== true || dropped.filter?.keep !== false) {
    throw new Error(`decisions: ${JSON.stringify(kept)} / ${JSON.stringify(dropped)}`);
  }
  await page.screenshot(shot("plugins"));

  step("overview: the last hour's charts are drawn");
  await page.getByRole("button", { name: "Overview" }).click();
  await page.locator("#chart-flow canvas").waitFor();
  await page.locator("#chart-queue canvas").waitFor();
  const points = Number(await page.locator("#overview").getAttribute("data-points"));
  if (!(points >= 1)) throw new Error(`overview points: ${points}`);
  await page.screenshot(shot("overview"));

  step("narrow screen, dark mode");
  await page.setViewportSize({ width: 390, height: 800 });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.getByRole("button", { name: "Deliveries" }).click();
  await listed.waitFor();
  await page.screenshot(shot("deliveries-narrow-dark"));
}, {
  // 403: the wrong token; 422: the bad URL, the broken plugin file.
  expected: [403, 422],
});
