// `alarm-filter-js`: the per-customer alarm filter of `plugins/alarm-filter`,
// in JavaScript. Config: {"categories": [...], "reasons": [...]}, each
// optional; an `alarm` is kept only if its category and reason are listed.
import * as hookhost from "../sdk-js/hookhost.js";

function listed(config, key) {
  const list = config[key];
  if (list !== undefined && !Array.isArray(list)) {
    throw new TypeError(`config: ${key} must be a list of strings`);
  }
  return list;
}

function keep(event, config) {
  const categories = listed(config, "categories");
  const reasons = listed(config, "reasons");
  const alarm = event.data;
  return (
    (categories === undefined || categories.includes(alarm.alarm_category)) &&
    (reasons === undefined || reasons.includes(alarm.alarm_reason))
  );
}

export const filter = hookhost.filter(keep, { only: ["alarm"] });
