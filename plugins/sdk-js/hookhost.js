// hookhost's JavaScript plugin SDK: a plugin is a function per role.
//
//   import * as hookhost from "./hookhost.js";
//   function keep(event, config) {
//     return (config.reasons ?? []).includes(event.data.alarm_reason);
//   }
//   export const filter = hookhost.filter(keep, { only: ["alarm"] });
//
// `filter`, `transform` and `router` turn a function `(event, config)` into
// the object componentize-qjs exports for that role (export it as `filter`,
// `transform` or `router`). They parse the config once per distinct text
// ({} when blank), give `event.data` as an object, and turn any exception
// into the event's plugin error with its message (a thrown Error would
// otherwise trap the instance). `only: [...]` lets other event types through
// without a call: kept, unchanged, routed nowhere.
//
// Build: componentize-qjs --wit WIT --world filter-plugin --js NAME.js --stub-wasi --sync -o NAME.wasm

import { log as hostLog } from "hookhost:plugin/log@0.1.0";

/** Writes a log line through the host: level is trace|debug|info|warn|error. */
export function log(level, message) {
  hostLog(level, String(message));
}

/** One event: id, type, timestamp (RFC 3339 UTC), data (an object, parsed on first use). */
class Event {
  constructor(event) {
    this.id = event.id;
    this.type = event.eventType;
    this.timestamp = event.timestamp;
    this.dataText = event.data;
    this.parsed = undefined;
  }
  get data() {
    if (this.parsed === undefined) this.parsed = JSON.parse(this.dataText);
    return this.parsed;
  }
}

// Parsed configs by text: a plugin sees one text per subscription using it.
const configs = new Map();
const KEPT = 16;

function parseConfig(text) {
  let parsed = configs.get(text);
  if (parsed === undefined) {
    try {
      parsed = text.trim() === "" ? {} : JSON.parse(text);
    } catch (e) {
      throw `config: ${e.message}`;
    }
    if (configs.size >= KEPT) configs.delete(configs.keys().next().value);
    configs.set(text, parsed);
  }
  return parsed;
}

// componentize-qjs returns a thrown *string* as the call's `err`; anything
// else traps. So every exception leaves as text naming it.
function call(fn, event, config) {
  const parsedConfig = parseConfig(config);
  try {
    return fn(new Event(event), parsedConfig);
  } catch (e) {
    if (typeof e === "string") throw e;
    if (e instanceof Error) throw `${e.name}: ${e.message}`;
    throw `uncaught: ${String(e)}`;
  }
}

function applies(only, event) {
  return only.length === 0 || only.includes(event.eventType);
}

/** `keep(event, config) -> boolean`, exported as the plugin's filter. */
export function filter(keep, { only = [] } = {}) {
  return {
    keep(event, config) {
      return applies(only, event) ? Boolean(call(keep, event, config)) : true;
    },
  };
}

/** `rewrite(event, config) -> null | {type?, data?}`: a missing part is unchanged. */
export function transform(rewrite, { only = [] } = {}) {
  return {
    transform(event, config) {
      const out = applies(only, event) ? call(rewrite, event, config) ?? {} : {};
      return {
        eventType: out.type ?? null,
        data: out.data === undefined || out.data === null ? null : JSON.stringify(out.data),
      };
    },
  };
}

/** `route(event, config) -> {tags?, subscriptions?}`. */
export function router(route, { only = [] } = {}) {
  return {
    route(event, config) {
      const out = applies(only, event) ? call(route, event, config) ?? {} : {};
      return { subscriptions: [...(out.subscriptions ?? [])], tags: [...(out.tags ?? [])] };
    },
  };
}
