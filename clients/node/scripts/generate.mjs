#!/usr/bin/env node
// Writes src/generated.ts from docs/schemas/contracts.json, the JSON Schema document that
// `vamu-tasks contracts export` generates from the pydantic models. No dependencies: a small
// JSON Schema -> TypeScript emitter for the constructs those schemas use (objects with
// required and optional properties, string/integer/number/boolean/null, enum/const,
// anyOf/oneOf (nullable and discriminated unions), allOf, arrays and tuples, maps, $ref to
// $defs), plus the job and event maps from `x-vamu-jobs` and `x-vamu-events`.
//
//   node scripts/generate.mjs                    # writes src/generated.ts
//   node scripts/generate.mjs --check            # exits 1 if src/generated.ts is stale
//   node scripts/generate.mjs --schema FILE --out FILE
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const { values: args } = parseArgs({
  options: {
    check: { type: 'boolean', default: false },
    schema: { type: 'string', default: resolve(pkg, '../../docs/schemas/contracts.json') },
    out: { type: 'string', default: resolve(pkg, 'src/generated.ts') },
  },
});

class SchemaError extends Error {}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function key(name) {
  return IDENT.test(name) ? name : JSON.stringify(name);
}

function literal(value) {
  if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) {
    return JSON.stringify(value);
  }
  throw new SchemaError(`unsupported literal ${JSON.stringify(value)}`);
}

function refName(ref, defs) {
  const match = /^#\/\$defs\/(.+)$/.exec(ref);
  if (!match) throw new SchemaError(`unsupported $ref ${ref} (only #/$defs/<name>)`);
  const name = decodeURIComponent(match[1]).replace(/~1/g, '/').replace(/~0/g, '~');
  if (!(name in defs)) throw new SchemaError(`$ref to a missing $def: ${ref}`);
  if (!IDENT.test(name)) throw new SchemaError(`$def name is not a TypeScript name: ${name}`);
  return name;
}

function union(parts) {
  const unique = [...new Set(parts)];
  if (unique.includes('unknown')) return 'unknown';
  return unique.length === 1 ? unique[0] : unique.join(' | ');
}

// A type in a position where `|` and `&` bind loosely (array element, intersection member).
function tight(type) {
  return /[|&]/.test(type) && !/^\{[\s\S]*\}$/.test(type) ? `(${type})` : type;
}

const ANNOTATIONS = new Set([
  'title', 'description', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly',
  '$comment', 'discriminator', 'format', 'pattern', 'minLength', 'maxLength', 'minimum',
  'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf', 'minItems', 'maxItems',
  'uniqueItems', 'minProperties', 'maxProperties', 'propertyNames', '$id', '$schema',
  'contentEncoding', 'contentMediaType',
]);

// The shape of a schema without its annotations, to recognise an inlined copy of a $def
// (pydantic inlines Literal enums and unions that are also exported as $defs).
function shape(schema) {
  if (Array.isArray(schema)) return schema.map(shape);
  if (!schema || typeof schema !== 'object') return schema;
  const out = {};
  for (const k of Object.keys(schema).sort()) {
    if (['title', 'description', 'default', 'examples', '$comment'].includes(k)) continue;
    out[k] = k === 'enum' || k === 'const' ? schema[k] : shape(schema[k]);
  }
  return out;
}

let shapes = null;

function namedCopy(schema, defs) {
  if (!schema || typeof schema !== 'object' || schema.$ref) return null;
  if (!(schema.enum || schema.anyOf || schema.oneOf)) return null;
  if (!shapes) {
    shapes = new Map();
    for (const [name, def] of Object.entries(defs)) {
      const s = JSON.stringify(shape(def));
      if (!shapes.has(s)) shapes.set(s, name);
    }
  }
  return shapes.get(JSON.stringify(shape(schema))) ?? null;
}

function typeOf(schema, defs, indent, top = false) {
  const named = top ? null : namedCopy(schema, defs);
  if (named) return named;
  if (schema === true || (schema && Object.keys(schema).every((k) => ANNOTATIONS.has(k)))) {
    return 'unknown';
  }
  if (schema === false) return 'never';
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
    throw new SchemaError(`not a schema: ${JSON.stringify(schema)}`);
  }
  const known = new Set([...ANNOTATIONS, '$ref', 'const', 'enum', 'anyOf', 'oneOf', 'allOf',
    'type', 'properties', 'required', 'additionalProperties', 'items', 'prefixItems', '$defs']);
  const unknownKeys = Object.keys(schema).filter((k) => !known.has(k) && !k.startsWith('x-'));
  if (unknownKeys.length) {
    throw new SchemaError(`unsupported keyword(s) ${unknownKeys.join(', ')}`);
  }
  if (schema.$ref) return refName(schema.$ref, defs);
  if ('const' in schema) return literal(schema.const);
  if (schema.enum) return union(schema.enum.map(literal));
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) return union(alternatives.map((s) => typeOf(s, defs, indent)));
  if (schema.allOf) {
    const parts = schema.allOf.map((s) => typeOf(s, defs, indent));
    return parts.length === 1 ? parts[0] : parts.map(tight).join(' & ');
  }
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  return union(types.map((t) => {
    switch (t) {
      case 'string': return 'string';
      case 'integer':
      case 'number': return 'number';
      case 'boolean': return 'boolean';
      case 'null': return 'null';
      case 'array': return arrayType(schema, defs, indent);
      case 'object': return objectType(schema, defs, indent);
      case undefined:
        if (schema.properties) return objectType(schema, defs, indent);
        return 'unknown';
      default: throw new SchemaError(`unsupported type ${JSON.stringify(t)}`);
    }
  }));
}

function arrayType(schema, defs, indent) {
  if (schema.prefixItems) {
    const items = schema.prefixItems.map((s) => typeOf(s, defs, indent));
    const rest = schema.items === false || schema.items === undefined ? []
      : [`...${tight(typeOf(schema.items, defs, indent))}[]`];
    return `[${[...items, ...rest].join(', ')}]`;
  }
  if (schema.items === undefined) return 'unknown[]';
  return `${tight(typeOf(schema.items, defs, indent))}[]`;
}

function doc(schema, indent) {
  const lines = [];
  if (schema.description) lines.push(...schema.description.trim().split('\n'));
  const facts = [];
  for (const k of ['format', 'minLength', 'maxLength', 'minimum', 'maximum', 'minItems',
    'maxItems']) {
    if (k in schema) facts.push(`${k} ${JSON.stringify(schema[k])}`);
  }
  if ('default' in schema && schema.default !== null) {
    facts.push(`default ${JSON.stringify(schema.default)}`);
  }
  if (facts.length) lines.push(`(${facts.join('; ')})`);
  if (!lines.length) return '';
  const pad = ' '.repeat(indent);
  if (lines.length === 1) return `${pad}/** ${lines[0].replace(/\*\//g, '*\\/')} */\n`;
  return `${pad}/**\n${lines.map((l) => `${pad} * ${l.replace(/\*\//g, '*\\/')}`.trimEnd())
    .join('\n')}\n${pad} */\n`;
}

// Annotations that live on a property's anyOf member (pydantic puts maxLength there).
function flatDoc(schema) {
  const out = { ...schema };
  for (const alt of schema.anyOf ?? schema.oneOf ?? []) {
    if (alt && typeof alt === 'object' && alt.type !== 'null') {
      for (const k of ['format', 'minLength', 'maxLength', 'minimum', 'maximum']) {
        if (k in alt && !(k in out)) out[k] = alt[k];
      }
    }
  }
  return out;
}

function objectType(schema, defs, indent) {
  const props = schema.properties ?? {};
  const extra = schema.additionalProperties;
  const names = Object.keys(props);
  if (!names.length) {
    if (extra === false) return 'Record<string, never>';
    const value = extra === undefined || extra === true ? 'unknown' : typeOf(extra, defs, indent);
    return `Record<string, ${value}>`;
  }
  const required = new Set(schema.required ?? []);
  const pad = ' '.repeat(indent + 2);
  const lines = names.map((name) => {
    const optional = required.has(name) ? '' : '?';
    return `${doc(flatDoc(props[name]), indent + 2)}${pad}${key(name)}${optional}: ${
      typeOf(props[name], defs, indent + 2)};`;
  });
  if (extra && extra !== true) {
    lines.push(`${pad}[key: string]: ${typeOf(extra, defs, indent + 2)};`);
  }
  return `{\n${lines.join('\n')}\n${' '.repeat(indent)}}`;
}

function emitDef(name, schema, defs) {
  if (!IDENT.test(name)) throw new SchemaError(`$def name is not a TypeScript name: ${name}`);
  const head = doc(schema, 0);
  const body = typeOf(schema, defs, 0, true);
  const isObject = body.startsWith('{\n') && (schema.type === 'object' || schema.properties);
  // Object $defs become interfaces (readable in editors); everything else a type alias.
  if (isObject) return `${head}export interface ${name} ${body}\n`;
  let out = `${head}export type ${name} = ${body};\n`;
  const values = schema.enum ?? (schema.anyOf ?? schema.oneOf ?? [])
    .map((s) => (s && 'const' in s ? s.const : undefined));
  if (values.length && values.every((v) => typeof v === 'string')) {
    out += `/** Every value of {@link ${name}}, for checks at run time. */\n`;
    out += `export const ${name}Values = ${JSON.stringify(values)} as const satisfies readonly ${
      name}[];\n`;
  }
  return out;
}

function mapOf(title, entries, valueOf) {
  const lines = entries.map(([k, v]) => `  ${JSON.stringify(k)}: ${valueOf(v)};`);
  return `${title} = {\n${lines.join('\n')}\n};\n`;
}

function generate(doc_) {
  const defs = doc_.$defs;
  if (!defs || typeof defs !== 'object') throw new SchemaError('no $defs');
  const jobs = doc_['x-vamu-jobs'];
  const events = doc_['x-vamu-events'];
  if (!jobs || !events) throw new SchemaError('x-vamu-jobs and x-vamu-events are required');
  const check = (name, where) => {
    if (!(name in defs)) throw new SchemaError(`${where} names a missing $def: ${name}`);
    return name;
  };
  const jobEntries = Object.entries(jobs).map(([job, { data, result }]) =>
    [job, { data: check(data, `x-vamu-jobs.${job}.data`),
      result: check(result, `x-vamu-jobs.${job}.result`) }]);
  const eventEntries = Object.entries(events).map(([event, payload]) =>
    [event, check(payload, `x-vamu-events.${event}`)]);

  const parts = [
    '// Generated by scripts/generate.mjs from docs/schemas/contracts.json (the pydantic models of',
    '// vamu-tasks, written by `vamu-tasks contracts export`). Do not edit: change the models,',
    '// run `.venv/bin/vamu-tasks contracts export`, then `npm run generate` in clients/node.',
    '// `make lint` fails while this file is stale (`npm run check-generated`).',
    '',
    '/* eslint-disable */',
    '',
  ];
  for (const name of Object.keys(defs).sort()) {
    parts.push(emitDef(name, defs[name], defs));
  }
  parts.push('// BullMQ jobs (x-vamu-jobs)\n');
  parts.push(`/** The job names the bridge runs. */\nexport const JobNames = ${
    JSON.stringify(jobEntries.map(([k]) => k))} as const;\n`);
  parts.push('export type JobName = (typeof JobNames)[number];\n');
  parts.push(mapOf('/** Job name -> the data of its BullMQ job. */\nexport type JobDataMap',
    jobEntries, (v) => v.data));
  parts.push(mapOf('/** Job name -> the `result` of its row (and of its sync return value). */\n'
    + 'export type JobResultMap', jobEntries, (v) => v.result));
  parts.push('// Socket.IO events (x-vamu-events)\n');
  parts.push(`/** The Socket.IO events vamu-tasks sends to \`user:{userId}\`. */\nexport const EventNames = ${
    JSON.stringify(eventEntries.map(([k]) => k))} as const;\n`);
  parts.push('export type EventName = (typeof EventNames)[number];\n');
  parts.push(mapOf('/** Event name -> its payload (also the webhook body\'s `data`). */\n'
    + 'export type EventPayloadMap', eventEntries, (v) => v));
  parts.push(mapOf('/**\n * For a typed socket.io-client `Socket<ServerToClientEvents>` (or the server\'s\n'
    + ' * `Server<ClientToServerEvents, ServerToClientEvents>`).\n */\n'
    + 'export type ServerToClientEvents', eventEntries, (v) => `(payload: ${v}) => void`));
  return parts.join('\n');
}

function main() {
  if (!existsSync(args.schema)) {
    console.error(`generate: ${args.schema} does not exist; run .venv/bin/vamu-tasks contracts export`);
    return 2;
  }
  let text;
  try {
    text = generate(JSON.parse(readFileSync(args.schema, 'utf8')));
  } catch (err) {
    if (!(err instanceof SchemaError)) throw err;
    console.error(`generate: ${args.schema}: ${err.message}`);
    return 2;
  }
  const out = resolve(args.out);
  if (args.check) {
    const current = existsSync(out) ? readFileSync(out, 'utf8') : null;
    if (current !== text) {
      console.error(`${relative(process.cwd(), out)} is stale: it differs from ${
        relative(process.cwd(), args.schema)}. Run \`npm run generate\` in clients/node.`);
      return 1;
    }
    console.log(`${relative(process.cwd(), out)} is up to date`);
    return 0;
  }
  writeFileSync(out, text);
  console.log(`wrote ${relative(process.cwd(), out)}`);
  return 0;
}

process.exitCode = main();
