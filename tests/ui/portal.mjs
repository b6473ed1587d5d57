// Drives the customer portal in the system Chromium: a portal link shows
// its own subscription's delivery and not another's, and re-sends it.
// Run by tests/tests/ui.rs. Environment:
//   HOOKHOST_URL, PLAYWRIGHT_DIR, SCREENSHOTS, CHROMIUM  as in dashboard.mjs
//   PORTAL_PATH     the link's path (/portal#<token>)
//   DELIVERY_ID     a delivery of the link's subscription
//   OTHER_ID        a delivery of another subscription: never shown
import { env, shot, step, withPage, PATIENCE } from "./browser.mjs";

const url = env("HOOKHOST_URL");
const path = env("PORTAL_PATH");
const deliveryId = env("DELIVERY_ID");
const otherId = env("OTHER_ID");

await withPage(async (page) => {
  step("open the link: the token leaves the address bar");
  await page.goto(`${url}${path}`);
  const own = page.locator(`#delivery-table tr[data-delivery="${deliveryId}"]`);
  await own.waitFor();
  if (page.url().includes("#") || page.url().includes("hhp_")) {
    throw new Error(`the token stayed in the URL: ${page.url()}`);
  }
  if ((await page.locator(`tr[data-delivery="${otherId}"]`).count()) !== 0) {
    throw new Error("another subscription's delivery is shown");
  }
  if ((await page.locator("#delivery-table tbody tr").count()) !== 1) {
    throw new Error(`rows: ${await page.locator("#delivery-table tbody tr").count()}`);
  }
  await page.locator("#type-list details").first().waitFor();

  step("open its attempts and re-send it");
  await own.getByRole("button", { name: /Details/ }).click();
  await page.waitForFunction(
    (id) => document.querySelector("#delivery-detail")?.dataset.delivery === id,
    deliveryId,
  );
  await page.getByRole("button", { name: "Re-send" }).click();
  await page.waitForFunction(
    () =>
      document.querySelectorAll("#attempt-table tbody tr").length === 2 &&
      document.querySelector("#delivery-detail").dataset.status === "delivered",
  );
  await page.screenshot(shot("portal"));

  step("rotate the signing secret: the new one is shown once");
  await page.locator("#signing summary").click();
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByRole("button", { name: "Rotate signing secret" }).click();
  const secret = await page.locator("#new-secret").textContent({ timeout: PATIENCE });
  if (!secret.startsWith("whsec_")) throw new Error(`new secret: ${secret}`);
  await page.locator("#endpoint-facts", { hasText: "Signing secrets" }).waitFor();
  await page.screenshot(shot("portal-rotation"));

  step("a reload keeps the session; a page without a link says what to do");
  await page.reload();
  await own.waitFor();
  const stranger = await page.context().newPage();
  await stranger.goto(`${url}/portal`);
  await stranger.locator("#error", { hasText: "link" }).waitFor();
});
