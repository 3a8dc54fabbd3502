// A small JSON Schema (2020-12) validator for the keywords of docs/schemas/contracts.json, to
// check captured payloads at run time. Returns the problems found ([] when valid).
type Schema = boolean | { [keyword: string]: any };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

export function validate(root: { $defs: Record<string, Schema> }, schema: Schema, value: unknown,
  path = '$'): string[] {
  if (schema === true) return [];
  if (schema === false) return [`${path}: no value is allowed here`];
  const problems: string[] = [];
  const fail = (message: string) => problems.push(`${path}: ${message}`);
  if (schema.$ref) {
    const name = /^#\/\$defs\/(.+)$/.exec(schema.$ref)?.[1];
    const target = name === undefined ? undefined : root.$defs[name];
    if (target === undefined) return [`${path}: unresolvable $ref ${schema.$ref}`];
    problems.push(...validate(root, target, value, path));
  }
  if ('const' in schema && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    fail(`expected ${JSON.stringify(schema.const)}, got ${JSON.stringify(value)}`);
  }
  if (schema.enum && !schema.enum.some((v: unknown) => JSON.stringify(v) === JSON.stringify(value))) {
    fail(`${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  }
  if (schema.type !== undefined) {
    const types: string[] = Array.isArray(schema.type) ? schema.type : [schema.type];
    const t = jsonType(value);
    if (!types.includes(t) && !(t === 'integer' && types.includes('number'))) {
      fail(`expected ${types.join(' or ')}, got ${t}`);
      return problems;
    }
  }
  for (const [keyword, pick] of [['anyOf', (n: number) => n >= 1], ['oneOf', (n: number) => n === 1]] as const) {
    if (!schema[keyword]) continue;
    const results = (schema[keyword] as Schema[]).map((s) => validate(root, s, value, path));
    const passing = results.filter((r) => r.length === 0).length;
    if (!pick(passing)) {
      fail(`${keyword}: ${passing} alternatives match; ${results.map((r) => r.join('; ')).join(' | ')}`);
    }
  }
  for (const s of schema.allOf ?? []) problems.push(...validate(root, s, value, path));
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && [...value].length < schema.minLength) fail('too short');
    if (schema.maxLength !== undefined && [...value].length > schema.maxLength) fail('too long');
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value)) {
      fail(`does not match ${schema.pattern}`);
    }
    if (schema.format === 'uuid' && !UUID.test(value)) fail('not a uuid');
    if (schema.format === 'date-time' && !DATE_TIME.test(value)) fail('not an RFC 3339 date-time');
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) fail(`below ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) fail(`above ${schema.maximum}`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) fail('too few items');
    if (schema.maxItems !== undefined && value.length > schema.maxItems) fail('too many items');
    const prefix: Schema[] = schema.prefixItems ?? [];
    value.forEach((item, i) => {
      const s = i < prefix.length ? prefix[i] : schema.items;
      if (s !== undefined) problems.push(...validate(root, s, item, `${path}[${i}]`));
    });
  }
  if (jsonType(value) === 'object') {
    const object = value as Record<string, unknown>;
    for (const name of schema.required ?? []) {
      if (!(name in object)) fail(`missing required ${name}`);
    }
    const props: Record<string, Schema> = schema.properties ?? {};
    for (const [name, item] of Object.entries(object)) {
      if (name in props) {
        problems.push(...validate(root, props[name]!, item, `${path}.${name}`));
      } else if (schema.additionalProperties !== undefined) {
        problems.push(...validate(root, schema.additionalProperties, item, `${path}.${name}`));
      }
    }
  }
  return problems;
}
