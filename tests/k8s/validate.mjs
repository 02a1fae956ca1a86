// validate.mjs: the test suite's offline check of Kubernetes manifests.
//   node validate.mjs [--lint] [--werror] [-q] FILE...     ('-' is stdin)
// Run through tests/k8s/validate, which finds the pinned dependencies that
// scripts/install-deps installed into build/k8s with npm ci.
//
// Each object is checked against the Kubernetes OpenAPI schema as generated
// into the npm package kubernetes-models (pinned in package-lock.json), with
// unknown fields reported as errors (kubectl --validate=strict does the
// same); then against the rules the API server applies to Jobs, CronJobs and
// pod templates that a schema cannot say; with --lint also against the
// practices the zoomerge manifests promise (pinned images, resources, the
// restricted security profile, bounded Jobs).  --werror makes warnings fail.
//
// Output: one line per problem on stdout,
//   FILE:LINE:COL: doc N (Kind/name) error|warning: path: message
// and a count on stderr.  Exit status 0 valid, 1 invalid, 2 usage or setup.
import { readFileSync } from "node:fs";
import { parseAllDocuments, LineCounter, isMap, isSeq } from "yaml";

const USAGE = "usage: validate.mjs [--lint] [--werror] [-q] FILE...";
const opts = { lint: false, werror: false, quiet: false };
const files = [];
for (const a of process.argv.slice(2)) {
  if (a === "--lint") opts.lint = true;
  else if (a === "--werror") opts.werror = true;
  else if (a === "-q") opts.quiet = true;
  else if (a === "-h" || a === "--help") { process.stdout.write(USAGE + "\n"); process.exit(0); }
  else if (a.startsWith("-") && a !== "-") { process.stderr.write(`validate: unknown option '${a}'\n${USAGE}\n`); process.exit(2); }
  else files.push(a);
}
if (files.length === 0) { process.stderr.write(`${USAGE}\n`); process.exit(2); }

let nErrors = 0;
let nWarnings = 0;
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;

// where(ctx, path): "LINE:COL" of the deepest node of path that exists.
function where(ctx, path) {
  let node = ctx.doc.contents;
  let range = node && node.range;
  for (const k of path) {
    let next = null;
    if (isMap(node)) {
      const pair = node.items.find((p) => p.key && p.key.value === k);
      if (pair) next = pair.value ?? pair.key;
      if (pair && !next) next = pair.key;
    } else if (isSeq(node) && typeof k === "number") next = node.items[k];
    if (!next) break;
    node = next;
    if (node.range) range = node.range;
  }
  if (!range) return "";
  const p = ctx.lc.linePos(range[0]);
  return `:${p.line}:${p.col}`;
}

function report(level, ctx, path, msg) {
  if (level === "error") nErrors++; else nWarnings++;
  const p = path.length ? path.map((k) => (typeof k === "number" ? `[${k}]` : `.${k}`)).join("").slice(1) : "";
  console.log(`${ctx.file}${where(ctx, path)}: doc ${ctx.index} (${ctx.label}) ${level}: ${p ? p.replace(/\.\[/g, "[") + ": " : ""}${msg}`);
}
const error = (ctx, path, msg) => report("error", ctx, path, msg);
const warn = (ctx, path, msg) => report("warning", ctx, path, msg);
const lint = (ctx, path, msg) => { if (opts.lint) warn(ctx, path, msg); };

// --- the schema ---------------------------------------------------------------
const models = new Map();
async function modelOf(apiVersion, kind) {
  if (!/^([a-z0-9.-]+\/)?v[0-9]+((alpha|beta)[0-9]+)?$/.test(apiVersion)) return null;
  if (!models.has(apiVersion)) {
    let mod = null;
    try { mod = await import(`kubernetes-models/${apiVersion}`); } catch { mod = null; }
    models.set(apiVersion, mod);
  }
  const mod = models.get(apiVersion);
  const cls = mod && Object.hasOwn(mod, kind) ? mod[kind] : null;
  return typeof cls === "function" && cls.kind === kind ? cls : null;
}

// The generated validators read every property their schema declares and
// enumerate the keys of maps (labels, data ...); a key that was neither read
// nor enumerated is a field the schema does not know.
function watch(root) {
  const seen = new Map();
  const wrap = (value, path) => {
    if (value === null || typeof value !== "object") return value;
    const rec = { value, path, read: new Set(), all: false };
    seen.set(value, rec);
    return new Proxy(value, {
      get(t, k) {
        if (typeof k === "string") rec.read.add(k);
        return wrap(t[k], path.concat(Array.isArray(t) && /^[0-9]+$/.test(k) ? Number(k) : k));
      },
      has(t, k) { if (typeof k === "string") rec.read.add(k); return k in t; },
      ownKeys(t) { rec.all = true; return Reflect.ownKeys(t); },
      getOwnPropertyDescriptor(t, k) { return Reflect.getOwnPropertyDescriptor(t, k); },
    });
  };
  return { proxy: wrap(root, []), seen };
}

function unknownFields(seen) {
  const out = [];
  for (const rec of seen.values()) {
    if (Array.isArray(rec.value) || rec.all) continue;
    for (const k of Object.keys(rec.value)) if (!rec.read.has(k)) out.push(rec.path.concat(k));
  }
  return out;
}

// ajv's instancePath "/spec/template/0" as a path.
const pathOf = (ptr) => ptr.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~")).map((s) => (/^[0-9]+$/.test(s) ? Number(s) : s));

function schemaMessage(e) {
  const p = e.params || {};
  if (e.keyword === "required") return `required field "${p.missingProperty}" is missing`;
  if (e.keyword === "enum") return `${e.message}: ${JSON.stringify(p.allowedValues)}`;
  return e.message || e.keyword;
}

// --- quantities ----------------------------------------------------------------
const SUFFIX = { "": 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
function quantity(v) {
  const m = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$/.exec(String(v));
  if (!m || !(m[2] in SUFFIX)) return NaN;
  return Number(m[1]) * SUFFIX[m[2]];
}

// --- rules the API server applies ----------------------------------------------
function podTemplate(ctx, tpl, at, refs) {
  const spec = isObj(tpl) && isObj(tpl.spec) ? tpl.spec : null;
  if (!spec) return;
  const sp = at.concat("spec");
  const vols = new Set();
  (spec.volumes || []).forEach((v, i) => {
    if (!DNS_LABEL.test(v.name || "") || v.name.length > 63) error(ctx, sp.concat("volumes", i, "name"), `"${v.name}" is not a DNS-1123 label`);
    if (vols.has(v.name)) error(ctx, sp.concat("volumes", i, "name"), `volume "${v.name}" declared twice`);
    vols.add(v.name);
    if (isObj(v.persistentVolumeClaim)) refs.push({ kind: "PersistentVolumeClaim", name: v.persistentVolumeClaim.claimName, ctx, path: sp.concat("volumes", i) });
    if (isObj(v.configMap)) refs.push({ kind: "ConfigMap", name: v.configMap.name, ctx, path: sp.concat("volumes", i) });
  });
  if (opts.lint && spec.automountServiceAccountToken !== false) lint(ctx, sp, "automountServiceAccountToken is not false");
  const psc = isObj(spec.securityContext) ? spec.securityContext : {};
  const names = new Set();
  for (const kind of ["initContainers", "containers"]) {
    (spec[kind] || []).forEach((c, i) => {
      const cp = sp.concat(kind, i);
      if (!isObj(c)) return;
      if (!DNS_LABEL.test(c.name || "") || c.name.length > 63) error(ctx, cp.concat("name"), `"${c.name}" is not a DNS-1123 label`);
      if (names.has(c.name)) error(ctx, cp.concat("name"), `container name "${c.name}" used twice`);
      names.add(c.name);
      if (typeof c.image !== "string" || c.image === "") error(ctx, cp, 'required field "image" is missing');
      const mounts = new Set();
      (c.volumeMounts || []).forEach((m, j) => {
        if (!vols.has(m.name)) error(ctx, cp.concat("volumeMounts", j, "name"), `no volume named "${m.name}"`);
        if (mounts.has(m.mountPath)) error(ctx, cp.concat("volumeMounts", j, "mountPath"), `mountPath "${m.mountPath}" used twice`);
        mounts.add(m.mountPath);
      });
      const res = isObj(c.resources) ? c.resources : {};
      const req = isObj(res.requests) ? res.requests : {};
      const lim = isObj(res.limits) ? res.limits : {};
      for (const r of Object.keys(req)) {
        if (r in lim && quantity(req[r]) > quantity(lim[r])) error(ctx, cp.concat("resources", "requests", r), `request ${req[r]} is above the limit ${lim[r]}`);
      }
      if (!opts.lint) return;
      if (typeof c.image === "string" && !/@sha256:[0-9a-f]{64}$/.test(c.image)) {
        const last = c.image.split("/").pop();
        const tag = last.includes(":") ? last.split(":").pop() : "";
        if (tag === "" || tag === "latest") lint(ctx, cp.concat("image"), `image "${c.image}" has no pinned tag or digest`);
      }
      if (!("cpu" in req)) lint(ctx, cp.concat("resources"), "no cpu request");
      if (!("memory" in req)) lint(ctx, cp.concat("resources"), "no memory request");
      if (!("memory" in lim)) lint(ctx, cp.concat("resources"), "no memory limit");
      const sc = isObj(c.securityContext) ? c.securityContext : {};
      const scp = cp.concat("securityContext");
      if (sc.runAsNonRoot !== true && psc.runAsNonRoot !== true) lint(ctx, scp, "runAsNonRoot is not true");
      if (sc.allowPrivilegeEscalation !== false) lint(ctx, scp, "allowPrivilegeEscalation is not false");
      if (sc.readOnlyRootFilesystem !== true) lint(ctx, scp, "readOnlyRootFilesystem is not true");
      const drop = isObj(sc.capabilities) && Array.isArray(sc.capabilities.drop) ? sc.capabilities.drop : [];
      if (!drop.includes("ALL")) lint(ctx, scp, "capabilities.drop does not hold ALL");
      const seccomp = (isObj(sc.seccompProfile) ? sc.seccompProfile : psc.seccompProfile) || {};
      if (seccomp.type !== "RuntimeDefault" && seccomp.type !== "Localhost") lint(ctx, scp, "seccompProfile is not RuntimeDefault");
    });
  }
}

function jobSpec(ctx, name, spec, at, refs) {
  if (!isObj(spec)) return;
  const tspec = isObj(spec.template) && isObj(spec.template.spec) ? spec.template.spec : {};
  const rp = at.concat("template", "spec", "restartPolicy");
  if (tspec.restartPolicy !== "Never" && tspec.restartPolicy !== "OnFailure") error(ctx, rp, "a Job's pods need restartPolicy Never or OnFailure");
  if (spec.podFailurePolicy !== undefined && tspec.restartPolicy !== "Never") error(ctx, rp, "podFailurePolicy requires restartPolicy Never");
  const indexed = spec.completionMode === "Indexed";
  if (indexed && spec.completions === undefined) error(ctx, at.concat("completionMode"), "Indexed requires completions");
  for (const f of ["backoffLimitPerIndex", "maxFailedIndexes", "successPolicy"]) {
    if (spec[f] !== undefined && !indexed) error(ctx, at.concat(f), `${f} requires completionMode Indexed`);
  }
  if (spec.maxFailedIndexes !== undefined) {
    if (spec.backoffLimitPerIndex === undefined) error(ctx, at.concat("maxFailedIndexes"), "maxFailedIndexes requires backoffLimitPerIndex");
    if (typeof spec.completions === "number" && spec.maxFailedIndexes > spec.completions) error(ctx, at.concat("maxFailedIndexes"), "maxFailedIndexes is above completions");
  }
  for (const f of ["parallelism", "completions", "backoffLimit", "backoffLimitPerIndex", "maxFailedIndexes", "ttlSecondsAfterFinished"]) {
    if (typeof spec[f] === "number" && spec[f] < 0) error(ctx, at.concat(f), `${f} must not be negative`);
  }
  if (typeof spec.activeDeadlineSeconds === "number" && spec.activeDeadlineSeconds <= 0) error(ctx, at.concat("activeDeadlineSeconds"), "activeDeadlineSeconds must be positive");
  const rules = isObj(spec.podFailurePolicy) && Array.isArray(spec.podFailurePolicy.rules) ? spec.podFailurePolicy.rules : [];
  rules.forEach((r, i) => {
    if (!isObj(r)) return;
    if (r.action === "FailIndex" && spec.backoffLimitPerIndex === undefined) error(ctx, at.concat("podFailurePolicy", "rules", i, "action"), "FailIndex requires backoffLimitPerIndex");
    const ec = r.onExitCodes;
    if (isObj(ec) && ec.operator === "In" && Array.isArray(ec.values) && ec.values.includes(0)) error(ctx, at.concat("podFailurePolicy", "rules", i, "onExitCodes", "values"), "onExitCodes In must not hold 0");
  });
  if (spec.selector !== undefined && spec.manualSelector !== true) error(ctx, at.concat("selector"), "a selector needs manualSelector: true");
  if (indexed && typeof name === "string" && typeof spec.completions === "number") {
    const host = `${name}-${Math.max(0, spec.completions - 1)}`;
    if (host.length > 63) error(ctx, at.concat("completions"), `the pod host name "${host}" is longer than 63 characters`);
  }
  if (opts.lint) {
    if (spec.ttlSecondsAfterFinished === undefined) lint(ctx, at, "no ttlSecondsAfterFinished");
    if (spec.activeDeadlineSeconds === undefined) lint(ctx, at, "no activeDeadlineSeconds");
    if (indexed && spec.backoffLimitPerIndex === undefined) lint(ctx, at, "an Indexed Job without backoffLimitPerIndex");
  }
  podTemplate(ctx, spec.template, at.concat("template"), refs);
}

function semantic(ctx, obj, refs) {
  const md = isObj(obj.metadata) ? obj.metadata : {};
  const name = md.name;
  const named = (max) => {
    if (typeof name !== "string" || !DNS_LABEL.test(name) || name.length > max) error(ctx, ["metadata", "name"], `"${name}" is not a DNS-1123 label of at most ${max} characters`);
  };
  switch (`${obj.apiVersion} ${obj.kind}`) {
    case "batch/v1 Job":
      named(63);
      jobSpec(ctx, name, obj.spec, ["spec"], refs);
      break;
    case "batch/v1 CronJob": {
      named(52);
      const spec = isObj(obj.spec) ? obj.spec : {};
      const s = typeof spec.schedule === "string" ? spec.schedule.trim() : "";
      if (/(^|\s)(CRON_)?TZ=/.test(s)) error(ctx, ["spec", "schedule"], "TZ= in the schedule is not allowed (use timeZone)");
      else if (!s.startsWith("@") && s.split(/\s+/).length !== 5) error(ctx, ["spec", "schedule"], `"${s}" does not have 5 fields`);
      if (opts.lint && spec.concurrencyPolicy !== "Forbid") lint(ctx, ["spec"], "concurrencyPolicy is not Forbid");
      if (opts.lint && spec.startingDeadlineSeconds === undefined) lint(ctx, ["spec"], "no startingDeadlineSeconds");
      const jt = isObj(spec.jobTemplate) ? spec.jobTemplate : {};
      jobSpec(ctx, `${name}-x`, jt.spec, ["spec", "jobTemplate", "spec"], refs);
      break;
    }
    case "v1 PersistentVolumeClaim": {
      const spec = isObj(obj.spec) ? obj.spec : {};
      if (!Array.isArray(spec.accessModes) || spec.accessModes.length === 0) error(ctx, ["spec"], "a PVC needs accessModes");
      if (!(isObj(spec.resources) && isObj(spec.resources.requests) && spec.resources.requests.storage)) error(ctx, ["spec"], "a PVC needs resources.requests.storage");
      break;
    }
    case "v1 ConfigMap": {
      let size = 0;
      for (const f of ["data", "binaryData"]) {
        for (const [k, v] of Object.entries(isObj(obj[f]) ? obj[f] : {})) {
          if (!CONFIG_KEY.test(k) || k.length > 253) error(ctx, [f, k], `"${k}" is not a valid ConfigMap key`);
          size += k.length + String(v).length;
        }
      }
      if (size > 1 << 20) error(ctx, [], `the data is ${size} bytes, above 1 MiB`);
      break;
    }
  }
}

// --- main --------------------------------------------------------------------------
async function main() {
  const objects = [];
  const refs = [];
  for (const f of files) {
    const file = f === "-" ? "<stdin>" : f;
    let src;
    try { src = readFileSync(f === "-" ? 0 : f, "utf8"); } catch (e) {
      process.stderr.write(`validate: cannot read ${file}: ${e.code || e.message}\n`);
      process.exit(2);
    }
    const lc = new LineCounter();
    const docs = parseAllDocuments(src, { lineCounter: lc, uniqueKeys: true, prettyErrors: false });
    let index = 0;
    let count = 0;
    for (const doc of Array.isArray(docs) ? docs : []) {
      const ctx = { file, lc, doc, index: index++, label: "?" };
      if (doc.errors.length) {
        for (const e of doc.errors) error(ctx, [], `YAML: ${e.message.split("\n")[0]}`);
        continue;
      }
      const obj = doc.toJS();
      if (obj === null || obj === undefined) continue;
      count++;
      if (!isObj(obj)) { error(ctx, [], "the document is not a mapping"); continue; }
      const md = isObj(obj.metadata) ? obj.metadata : {};
      ctx.label = `${obj.kind}/${md.name ?? "?"}`;
      if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") { error(ctx, [], "apiVersion and kind are required"); continue; }
      const cls = await modelOf(obj.apiVersion, obj.kind);
      if (!cls) { error(ctx, ["kind"], `unknown apiVersion/kind ${obj.apiVersion} ${obj.kind}`); continue; }
      const { proxy, seen } = watch(obj);
      try { cls.prototype.validate.call(proxy); } catch (e) {
        if (!Array.isArray(e.errors)) throw e;
        const shown = new Set();
        for (const x of e.errors) {
          const msg = `${x.instancePath} ${schemaMessage(x)}`;
          if (shown.has(msg)) continue;
          shown.add(msg);
          error(ctx, pathOf(x.instancePath), schemaMessage(x));
        }
      }
      for (const p of unknownFields(seen)) error(ctx, p, `unknown field "${p[p.length - 1]}"`);
      semantic(ctx, obj, refs);
      const key = `${obj.apiVersion} ${obj.kind} ${md.namespace ?? ""} ${md.name}`;
      if (objects.some((o) => o.key === key)) error(ctx, ["metadata", "name"], `${ctx.label} is defined twice`);
      objects.push({ key, kind: obj.kind, name: md.name });
    }
    if (count === 0) error({ file, lc, doc: { contents: null }, index: 0, label: "?" }, [], "no Kubernetes objects");
  }
  for (const r of refs) {
    if (!objects.some((o) => o.kind === r.kind && o.name === r.name)) warn(r.ctx, r.path, `${r.kind} "${r.name}" is not among the manifests`);
  }
  const failed = nErrors > 0 || (opts.werror && nWarnings > 0);
  if (!opts.quiet || failed) process.stderr.write(`validate: ${nErrors} errors, ${nWarnings} warnings in ${objects.length} objects\n`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { process.stderr.write(`validate: ${e.stack || e}\n`); process.exit(2); });
