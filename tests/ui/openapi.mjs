// Checks real answers of the API against /openapi.json with Ajv (JSON
// Schema 2020-12, what OpenAPI 3.1 uses). Run by tests/tests/api.rs.
// Argument: a JSON file {"document": <openapi.json>, "answers": [{"method",
// "path" (as the document writes it), "status", "body"}]}. Every answer must
// have a JSON schema in the document for its status and match it. Prints
// what it checked; exits 1 naming each mismatch.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(`${process.env.PLAYWRIGHT_DIR}/`);
const Ajv2020 = require("ajv/dist/2020").default;

const { document, answers } = JSON.parse(readFileSync(process.argv[2], "utf8"));
const base = "https://hookhost.invalid/openapi.json";
// Formats such as "uint64" are schemars' notes; the bounds beside them are
// what is checked.
const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
ajv.addSchema({ $id: base, components: document.components });

const failures = [];
const seen = new Set();
for (const { method, path, status, body } of answers) {
  const where = `${method} ${path} → ${status}`;
  const response = document.paths?.[path]?.[method.toLowerCase()]?.responses?.[String(status)];
  const schema = response?.content?.["application/json"]?.schema;
  if (!schema) {
    failures.push(`${where}: the document has no JSON schema for this answer`);
    continue;
  }
  // The document's refs are relative to itself: make them absolute.
  const absolute = JSON.parse(
    JSON.stringify(schema).replaceAll('"#/components/', `"${base}#/components/`),
  );
  const validate = ajv.compile(absolute);
  if (!validate(body)) {
    failures.push(`${where}: ${ajv.errorsText(validate.errors)}\n  answer: ${JSON.stringify(body).slice(0, 400)}`);
  }
  seen.add(where);
}
console.log(`checked ${answers.length} answers of ${seen.size} kinds`);
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
