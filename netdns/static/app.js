// The netdns admin page: reads /v1/networks, /v1/containers, /v1/events and /v1/resolve with
// the admin token, and shows them. Read-only: it never sends anything but GET.
//
// The token comes from the URL fragment (/ui/#token=...), which browsers never send to the
// server, and is kept in sessionStorage (this tab only); the fragment is then cleared from the
// address bar. The event feed is read with fetch() and a stream reader, since EventSource
// cannot send the Authorization header.
"use strict";

const TOKEN_KEY = "netdns.admin.token";
const MAX_EVENTS = 200; // rows kept in the feed; older ones drop off the bottom
const RECONNECT_MS = 2000;
const REFRESH_DELAY_MS = 250; // events come in bursts: one table refresh per burst

class AuthError extends Error {}

// -- the token and the API ------------------------------------------------------------------

function takeToken() {
  const found = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (found) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(found[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

let token = takeToken();

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.message) return body.message;
  } catch (_) {
    // not the API's JSON error: fall back to the status line
  }
  return `${response.status} ${response.statusText}`;
}

async function api(path) {
  const response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (response.status === 401) throw new AuthError(await errorMessage(response));
  if (!response.ok) throw new Error(`${path}: ${await errorMessage(response)}`);
  return response.json();
}

// -- small DOM helpers (text only: nothing from the API is parsed as HTML) -------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === "") continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const byId = (id) => document.getElementById(id);
const bare = (address) => (address || "").split("/")[0]; // "10.0.0.2/24" -> "10.0.0.2"

function setStatus(state, text) {
  const status = byId("status");
  status.dataset.state = state;
  status.textContent = text;
}

function showAuthProblem(message) {
  const banner = byId("auth");
  const example = `${location.origin}/ui/#token=<token>`;
  const intro = token
    ? "The daemon refused this page's token."
    : "This page has no admin token.";
  banner.replaceChildren(
    el("strong", {}, intro),
    ` The daemon says: ${message}.`,
    el("br"),
    "Open the page as ",
    el("code", {}, example),
    ", <token> being the contents of that file; the page keeps it for this browser tab only.",
  );
  banner.hidden = false;
  setStatus("error", "no access");
  if (!byId("networks").querySelector(".network")) {
    byId("networks").replaceChildren(el("p", { class: "empty" }, "Needs the admin token."));
  }
}

function showError(message) {
  const banner = byId("error");
  banner.textContent = message;
  banner.hidden = !message;
}

// -- networks and their containers ----------------------------------------------------------

let containers = []; // the last /v1/containers, for the resolve box

function networkSummary(network) {
  const parts = [];
  for (const config of network.IPAM.Config) {
    parts.push(config.Gateway ? `${config.Subnet} via ${config.Gateway}` : config.Subnet);
  }
  return parts.join(", ");
}

function flags(network) {
  const list = [network.Driver];
  if (network.Scope && network.Scope !== "local") list.push(network.Scope);
  if (network.Internal) list.push("internal");
  if (network.EnableIPv6) list.push("IPv6");
  if (network.Attachable) list.push("attachable");
  return list.map((flag) => el("span", { class: "tag" }, flag));
}

function namesCell(settings) {
  // DNSNames is null on a network without embedded DNS (the default bridge).
  if (!settings || settings.DNSNames === null || settings.DNSNames === undefined) {
    return el("td", { class: "names muted" }, "no embedded DNS");
  }
  const aliases = new Set(settings.Aliases || []);
  return el(
    "td",
    { class: "names" },
    settings.DNSNames.map((name) =>
      el("span", {
        class: aliases.has(name) ? "name alias" : "name",
        title: aliases.has(name) ? "alias" : "",
      }, name),
    ),
  );
}

function containerCount(count) {
  if (!count) return "no containers";
  return count === 1 ? "1 container" : `${count} containers`;
}

function networkSection(network, containersById) {
  const members = Object.entries(network.Containers).sort((a, b) =>
    a[1].Name.localeCompare(b[1].Name),
  );
  const hasIPv6 = network.EnableIPv6 || members.some(([, m]) => m.IPv6Address);
  const header = el(
    "div",
    { class: "network-header" },
    el("h3", {}, network.Name),
    flags(network),
    el("span", { class: "subnet" }, networkSummary(network)),
    el("span", { class: "muted right" }, containerCount(members.length)),
  );
  const section = el("section", { class: "network", "data-network": network.Name }, header);
  if (!members.length) {
    section.classList.add("empty-network");
    return section;
  }
  const head = el(
    "tr",
    {},
    el("th", {}, "Container"),
    el("th", {}, "IPv4"),
    hasIPv6 ? el("th", {}, "IPv6") : null,
    el("th", {}, "DNS names (aliases in bold)"),
  );
  const rows = members.map(([id, member]) => {
    const container = containersById.get(id);
    const settings = container ? container.NetworkSettings.Networks[network.Name] : null;
    return el(
      "tr",
      { "data-container": member.Name },
      el("td", { class: "container", title: id }, member.Name),
      el("td", { class: "ipv4 mono" }, bare(member.IPv4Address)),
      hasIPv6 ? el("td", { class: "ipv6 mono" }, bare(member.IPv6Address)) : null,
      namesCell(settings),
    );
  });
  const columns = el(
    "colgroup",
    {},
    el("col", { class: "container-col" }),
    el("col", { class: "address-col" }),
    hasIPv6 ? el("col", { class: "address-col" }) : null,
    el("col"),
  );
  section.append(el("table", {}, columns, el("thead", {}, head), el("tbody", {}, rows)));
  return section;
}

function renderNetworks(networks) {
  const containersById = new Map(containers.map((c) => [c.Id, c]));
  // Networks with containers first, then the empty ones (host, none, ...), each by name.
  const sorted = [...networks].sort((a, b) => {
    const emptyA = !Object.keys(a.Containers).length;
    const emptyB = !Object.keys(b.Containers).length;
    return emptyA - emptyB || a.Name.localeCompare(b.Name);
  });
  byId("networks").replaceChildren(
    ...(sorted.length
      ? sorted.map((n) => networkSection(n, containersById))
      : [el("p", { class: "empty" }, "No networks.")]),
  );
  byId("counts").textContent =
    `${networks.length} networks · ${containers.length} containers`;
}

function renderContainerChoice() {
  const select = byId("resolve-from");
  const chosen = select.value;
  const names = containers.map((c) => c.Name.replace(/^\//, "")).sort();
  select.replaceChildren(
    el("option", { value: "" }, "(no container)"),
    ...names.map((name) => el("option", { value: name }, name)),
  );
  select.value = names.includes(chosen) ? chosen : "";
}

let refreshTimer = null;

async function refresh() {
  clearTimeout(refreshTimer);
  try {
    const [networks, found] = await Promise.all([api("/v1/networks"), api("/v1/containers")]);
    containers = found;
    renderNetworks(networks);
    renderContainerChoice();
    showError("");
  } catch (error) {
    if (error instanceof AuthError) {
      showAuthProblem(error.message);
      return;
    }
    // A daemon restarting or a dropped connection: say so, and try again shortly.
    showError(`Could not read the daemon's state: ${error.message} (retrying)`);
    refreshTimer = setTimeout(refresh, RECONNECT_MS);
  }
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, REFRESH_DELAY_MS);
}

// -- the live event feed ----------------------------------------------------------------------

const EVENT_FIELDS = ["container", "network", "service", "addresses", "aliases", "vips", "host"];

function eventKind(type) {
  if (/create|attach/.test(type)) return "added";
  if (/remove|detach/.test(type)) return "removed";
  return "changed";
}

function eventRow(event) {
  if (event.type === "gap") {
    return el(
      "li",
      { class: "event gap" },
      `events ${event.from}..${event.to} not shown (${event.reason || "lost"})`,
    );
  }
  const details = [];
  for (const key of EVENT_FIELDS) {
    const value = event[key];
    if (value === undefined || value === "" || (Array.isArray(value) && !value.length)) continue;
    // key=value, as `netdns events --format text` writes them
    details.push(
      el("span", { class: "field" }, el("span", { class: "key" }, `${key}=`),
        Array.isArray(value) ? value.join(",") : String(value)),
    );
  }
  const clock = (event.time || "").replace(/^.*T(\d\d:\d\d:\d\d).*$/, "$1");
  return el(
    "li",
    { class: `event ${eventKind(event.type)}`, "data-seq": event.seq, "data-type": event.type },
    el("span", { class: "seq mono" }, `#${event.seq}`),
    el("time", { class: "mono", title: event.time }, clock),
    el("span", { class: "type" }, event.type),
    el("span", { class: "details" }, details),
  );
}

function addEvent(event) {
  const list = byId("events");
  list.prepend(eventRow(event));
  while (list.childElementCount > MAX_EVENTS) list.lastElementChild.remove();
}

function setEventsState(text) {
  byId("events-state").textContent = text;
}

async function followEvents() {
  let lastSeq = 0;
  for (;;) {
    try {
      // Resumes after the last event seen: a reconnect neither repeats nor loses events
      // (the daemon sends a gap line for those it no longer holds).
      const query = lastSeq ? `?since=${lastSeq}` : "";
      const response = await fetch(`/v1/events${query}`, {
        headers: authHeaders(),
        cache: "no-store",
      });
      if (response.status === 401) {
        showAuthProblem(await errorMessage(response));
        setEventsState("(no access)");
        return;
      }
      if (!response.ok) throw new Error(await errorMessage(response));
      setEventsState(""); // the header's badge says "live"
      setStatus("live", "live");
      showError("");
      refreshSoon(); // what changed while the feed was down
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        let end;
        while ((end = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, end).trim();
          pending = pending.slice(end + 1);
          if (!line) continue;
          const event = JSON.parse(line);
          if (event.seq) lastSeq = event.seq;
          addEvent(event);
          refreshSoon();
        }
      }
    } catch (error) {
      showError(`Event feed: ${error.message}`);
    }
    setEventsState("reconnecting");
    setStatus("connecting", "reconnecting");
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

// -- the resolve box --------------------------------------------------------------------------

function resultField(label, field, value) {
  return [el("dt", {}, label), el("dd", { "data-field": field, class: "mono" }, value || "—")];
}

function renderResolve(result) {
  const answers = [...result.answers, ...result.additional];
  const upstream = result.upstream ? ` (${result.upstream})` : "";
  return el(
    "div",
    { class: "result", "data-rcode": result.rcode },
    el(
      "div",
      { class: "result-head" },
      el("span", { class: `rcode ${result.rcode === "NOERROR" ? "ok" : "bad"}`, "data-field": "rcode" },
        result.rcode),
      el("span", { class: "mono" }, `${result.name} ${result.type}`),
      result.from ? el("span", { class: "muted" }, `from ${result.from}`) : null,
    ),
    el(
      "dl",
      {},
      resultField("Rule", "rule", result.rule),
      resultField("Outcome", "outcome", result.outcome),
      resultField("Path", "path", result.path + upstream),
      resultField("Network", "network", result.network),
      resultField("Held by", "networks_holding", result.networks_holding.join(", ")),
      resultField("Time", "elapsed_ms", `${result.elapsed_ms} ms`),
    ),
    answers.length
      ? el("pre", { class: "answers", "data-field": "answers" },
        answers.map((line) => line.replace(/\s+/g, " ")).join("\n"))
      : el("p", { class: "muted", "data-field": "answers" }, "No records."),
  );
}

async function resolve(event) {
  event.preventDefault();
  const query = new URLSearchParams({
    from: byId("resolve-from").value,
    name: byId("resolve-name").value.trim(),
    type: byId("resolve-type").value,
  });
  const box = byId("resolve-result");
  box.replaceChildren(el("p", { class: "muted" }, "Asking…"));
  try {
    box.replaceChildren(renderResolve(await api(`/v1/resolve?${query}`)));
  } catch (error) {
    if (error instanceof AuthError) showAuthProblem(error.message);
    box.replaceChildren(el("p", { class: "failed", "data-field": "error" }, error.message));
  }
}

// -- start ------------------------------------------------------------------------------------

byId("resolve-form").addEventListener("submit", resolve);
// A new #token=... pasted into the address bar takes effect without a reload.
window.addEventListener("hashchange", () => {
  if (/token=/.test(location.hash)) location.reload();
});

refresh().then(() => {
  // Without the right token there is nothing to follow; any other failure is retried.
  if (byId("auth").hidden) followEvents();
});
