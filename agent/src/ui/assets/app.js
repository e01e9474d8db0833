// shoal's web view. Reads the cluster once (/ui/api/overview), then follows the event stream
// (/ui/api/stream, server-sent events) and changes only what each event names; the nodes and
// services (a few rows) are read again shortly after events that change them. Read-only.
'use strict';

(() => {
  const API = '/ui/api';
  /** Task states in their order; the ones after `running` have ended. */
  const ENDED = new Set(['complete', 'shutdown', 'failed', 'rejected', 'orphaned']);
  const UNASSIGNED = '';

  const model = {
    cluster: null,
    nodes: new Map(), // node id -> node
    services: new Map(), // service name -> service
    tasks: new Map(), // task id (number) -> task
    agent: null, // this agent's view from the stream
    connected: false,
    imagesAfter: new Map(), // service name -> time of its last spec change
  };
  const view = {
    columns: new Map(), // node id ('' for unassigned) -> {section, list, header}
    cards: new Map(), // task id -> li
  };
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------
  // Small helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function taskId(id) {
    return 't' + Number(id).toString(16).padStart(11, '0');
  }

  function taskName(task) {
    return task.slot != null ? `${task.service}.${task.slot}` : `${task.service}.${taskId(task.id)}`;
  }

  function shown(task) {
    return task.desired !== 'shutdown' || !ENDED.has(task.state);
  }

  function shortId(id) {
    return id && id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id || '';
  }

  /** A node's hostname, with the end of its id when another node has the same hostname. */
  function nodeName(id) {
    if (!id) return 'none';
    const node = model.nodes.get(id);
    if (!node) return shortId(id);
    let twins = 0;
    for (const other of model.nodes.values()) if (other.hostname === node.hostname) twins += 1;
    return twins > 1 ? `${node.hostname} (…${id.slice(-6)})` : node.hostname;
  }

  function age(ms) {
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h`;
    return `${Math.floor(s / 86400)} d`;
  }

  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
  }

  function cpus(nano) {
    const value = nano / 1e9;
    return `${value >= 10 ? Math.round(value) : value.toFixed(2).replace(/\.?0+$/, '')} CPU`;
  }

  async function getJSON(path) {
    const response = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).error || message;
      } catch (_) {
        // not JSON: keep the status
      }
      throw new Error(message);
    }
    return response.json();
  }

  // ---------------------------------------------------------------------------------------
  // The cluster, the warnings

  function renderCluster() {
    const c = model.cluster;
    if (!c) return;
    $('cluster-id').textContent = c.id || 'not formed yet';
    $('cluster-leader').textContent = c.leader ? nodeName(c.leader) : 'none';
    $('cluster-managers').textContent = c.managers.length
      ? c.managers.map(nodeName).join(', ')
      : 'none';
    $('cluster-term').textContent = c.term;
    $('cluster-index').textContent = c.index;
  }

  function renderStatus() {
    showWarnings();
    renderLive();
  }

  function showWarnings() {
    const warnings = [];
    if (!model.connected) {
      warnings.push('Lost the connection to this agent: retrying. What you see may be out of date.');
    } else if (model.agent) {
      if (!model.agent.reachable) {
        warnings.push(
          `This agent cannot reach the cluster's managers (${model.agent.message || 'no answer'}): what you see may be out of date.`,
        );
      }
      if (!model.agent.leader) {
        warnings.push(
          "This agent has lost the cluster's leader: nothing in the cluster changes until a new leader is elected.",
        );
      }
    }
    const box = $('warning');
    // The same warnings again are not announced again.
    const said = warnings.join('\n');
    if (box.dataset.said === said) return;
    box.dataset.said = said;
    box.replaceChildren();
    if (warnings.length === 1) {
      box.textContent = warnings[0];
    } else if (warnings.length > 1) {
      const list = el('ul');
      for (const text of warnings) list.append(el('li', null, text));
      box.append(list);
    }
    box.hidden = warnings.length === 0;
  }

  function renderLive() {
    const live = $('live');
    live.textContent = model.connected ? 'Live' : 'Reconnecting…';
    live.classList.toggle('on', model.connected && $('warning').hidden);
    if (model.agent) $('agent-node').textContent = nodeName(model.agent.node);
  }

  // ---------------------------------------------------------------------------------------
  // Services

  function renderServices() {
    const body = $('services').tBodies[0];
    const rows = [];
    const services = [...model.services.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const s of services) {
      const row = el('tr');
      row.dataset.service = s.name;
      const name = el('th', null, s.name);
      name.scope = 'row';
      const replicas = el('td', 'replicas', `${s.running} / ${s.desired}`);
      if (s.running < s.desired) replicas.classList.add('short');
      const update = el('td', 'update');
      if (s.update) {
        const u = s.update;
        update.textContent = u.state.replace('_', ' ');
        if (u.in_progress) {
          update.append(` ${u.done} / ${u.total}`);
          const bar = el('progress');
          bar.max = Math.max(1, u.total);
          bar.value = u.done;
          bar.setAttribute('aria-label', `${s.name}: ${u.done} of ${u.total} tasks updated`);
          update.append(bar);
        }
        if (u.message) update.title = u.message;
      } else {
        update.textContent = '—';
      }
      row.append(name, el('td', null, s.mode), replicas, el('td', 'image', s.image), update);
      rows.push(row);
    }
    body.replaceChildren(...rows);
    $('services-count').textContent = `(${services.length})`;
    $('services-empty').hidden = services.length > 0;
  }

  // ---------------------------------------------------------------------------------------
  // Nodes and their columns

  function column(id) {
    let col = view.columns.get(id);
    if (col) return col;
    const section = el('section', 'node');
    section.dataset.node = id;
    const header = el('header');
    const title = el('h3');
    title.id = `node-${view.columns.size}`;
    section.setAttribute('aria-labelledby', title.id);
    header.append(title);
    const list = el('ul', 'tasks');
    list.setAttribute('aria-label', 'Tasks');
    section.append(header, list);
    col = { section, header, title, list };
    view.columns.set(id, col);
    return col;
  }

  function usage(label, reserved, total, show) {
    const frag = document.createDocumentFragment();
    const name = el('span', null, label);
    const meter = el('meter');
    meter.min = 0;
    meter.max = Math.max(1, total);
    meter.value = Math.min(reserved, meter.max);
    meter.high = meter.max * 0.85;
    const figure = el('span', 'figure', `${show(reserved)} of ${show(total)} reserved`);
    meter.setAttribute('aria-label', `${label}: ${figure.textContent}`);
    frag.append(name, meter, figure);
    return frag;
  }

  function renderNodeHeader(col, node) {
    col.title.textContent = nodeName(node.id);
    col.list.setAttribute('aria-label', `Tasks on ${col.title.textContent}`);
    col.section.classList.toggle('down', node.state === 'down');
    const badges = el('ul', 'badges');
    badges.setAttribute('aria-label', 'Status');
    const isLeader = model.cluster && model.cluster.leader === node.id;
    for (const [text, cls] of [
      [isLeader ? 'leader' : node.role, isLeader ? 'leader' : node.role],
      [node.state, node.state],
      [node.availability, node.availability],
    ]) {
      badges.append(el('li', `badge ${cls}`, text));
    }
    const parts = [col.title, badges];
    const labels = Object.entries(node.labels || {});
    if (labels.length) {
      parts.push(el('p', 'labels', `Labels: ${labels.map(([k, v]) => `${k}=${v}`).join(', ')}`));
    }
    const meters = el('div', 'usage');
    meters.append(usage('CPU', node.cpu.reserved, node.cpu.total, cpus));
    meters.append(usage('Memory', node.memory.reserved, node.memory.total, bytes));
    parts.push(meters);
    col.header.replaceChildren(...parts);
  }

  function renderNodes() {
    const nodes = [...model.nodes.values()].sort((a, b) =>
      a.hostname === b.hostname ? a.id.localeCompare(b.id) : a.hostname.localeCompare(b.hostname),
    );
    const order = [];
    for (const node of nodes) {
      const col = column(node.id);
      renderNodeHeader(col, node);
      order.push(col.section);
    }
    // Tasks that have no node (pending) get a column of their own while there are any.
    const unassigned = view.columns.get(UNASSIGNED);
    if (unassigned && unassigned.list.childElementCount > 0) {
      unassigned.title.textContent = 'Not placed';
      unassigned.header.replaceChildren(unassigned.title, el('p', 'labels', 'Tasks waiting for a node'));
      order.unshift(unassigned.section);
    }
    for (const [id, col] of view.columns) {
      if (id !== UNASSIGNED && !model.nodes.has(id)) {
        // A node that left: its remaining cards go with it.
        for (const card of col.list.children) view.cards.delete(Number(card.dataset.id));
        view.columns.delete(id);
      }
    }
    const box = $('nodes');
    const current = [...box.children];
    if (current.length !== order.length || current.some((child, i) => child !== order[i])) {
      box.replaceChildren(...order);
    }
    $('nodes-count').textContent = `(${nodes.length})`;
  }

  // ---------------------------------------------------------------------------------------
  // Task cards

  function fillCard(li, task) {
    li.className = `task s-${task.state}` + (task.desired === 'shutdown' ? ' stopping' : '');
    li.dataset.id = task.id;
    li.dataset.service = task.service;
    li.dataset.state = task.state;
    li.dataset.sort = `${task.service}\u0000${String(task.slot ?? 0).padStart(12, '0')}\u0000${task.id}`;
    let button = li.firstElementChild;
    if (!button) {
      button = el('button', 'card');
      button.type = 'button';
      button.append(el('span', 'name'), el('span', 'state'), el('span', 'image'), el('span', 'age'));
      li.append(button);
    }
    button.className = `card s-${task.state}`;
    const [name, state, image, when] = button.children;
    name.textContent = taskName(task);
    state.textContent = task.desired === 'shutdown' && !ENDED.has(task.state) ? `${task.state} (stopping)` : task.state;
    image.textContent = task.image;
    when.textContent = age(task.since);
    when.dataset.since = task.since;
    let error = button.children[4];
    if (task.message && task.state !== 'running') {
      if (!error) {
        error = el('span', 'error');
        button.append(error);
      }
      error.textContent = task.message;
    } else if (error) {
      error.remove();
    }
    button.setAttribute(
      'aria-label',
      `${taskName(task)}, ${state.textContent}, ${task.image}, for ${when.textContent}` +
        (error ? `, ${task.message}` : '') +
        ': open its details',
    );
  }

  /** Puts `li` in `list` in service and slot order. */
  function place(list, li) {
    const key = li.dataset.sort;
    let before = null;
    for (let child = list.lastElementChild; child; child = child.previousElementSibling) {
      if (child === li) continue;
      if (child.dataset.sort <= key) break;
      before = child;
    }
    if (li.parentNode === list && li.nextElementSibling === before) return;
    list.insertBefore(li, before);
  }

  function upsertCard(task) {
    let li = view.cards.get(task.id);
    if (!li) {
      li = el('li');
      view.cards.set(task.id, li);
    }
    fillCard(li, task);
    place(column(task.node || UNASSIGNED).list, li);
  }

  function removeCard(id) {
    const li = view.cards.get(id);
    if (li) {
      li.remove();
      view.cards.delete(id);
    }
  }

  /** Draws every task at once (the first load): one fragment per column. */
  function renderAllTasks() {
    for (const col of view.columns.values()) col.list.replaceChildren();
    view.cards.clear();
    const byColumn = new Map();
    const tasks = [...model.tasks.values()];
    for (const task of tasks) {
      const li = el('li');
      fillCard(li, task);
      view.cards.set(task.id, li);
      const key = task.node || UNASSIGNED;
      if (!byColumn.has(key)) byColumn.set(key, []);
      byColumn.get(key).push(li);
    }
    for (const [key, items] of byColumn) {
      items.sort((a, b) => (a.dataset.sort < b.dataset.sort ? -1 : a.dataset.sort > b.dataset.sort ? 1 : 0));
      const frag = document.createDocumentFragment();
      frag.append(...items);
      column(key).list.append(frag);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Loading and following

  function takeParts(overview) {
    const index = model.cluster ? Math.max(model.cluster.index, overview.cluster.index) : overview.cluster.index;
    model.cluster = { ...overview.cluster, index };
    // This agent's own view of the leader is the freshest (the stream's `agent` messages).
    if (model.agent) model.cluster.leader = model.agent.leader;
    model.nodes = new Map(overview.nodes.map((n) => [n.id, n]));
    model.services = new Map(overview.services.map((s) => [s.name, s]));
  }

  let stream = null;
  let loading = null;

  async function load() {
    if (loading) return loading;
    loading = (async () => {
      const started = performance.now();
      for (;;) {
        try {
          const overview = await getJSON(`${API}/overview`);
          const fetched = performance.now();
          takeParts(overview);
          model.tasks = new Map(overview.tasks.map((t) => [t.id, t]));
          renderAllTasks();
          renderNodes();
          renderServices();
          renderCluster();
          const note = $('tasks-note');
          note.hidden = !overview.tasks_truncated;
          note.textContent = overview.tasks_truncated ? `Only the first ${overview.tasks.length} tasks are shown.` : '';
          follow(overview.cursor);
          const done = performance.now();
          // Read by the tests and by anyone curious (the console): how long drawing took.
          window.shoalView = {
            tasks: model.tasks.size,
            fetchMs: fetched - started,
            renderMs: done - fetched,
            readyAt: done,
          };
          document.body.dataset.ready = 'true';
          return;
        } catch (error) {
          model.connected = false;
          renderStatus();
          $('live').textContent = `Cannot read the cluster: ${error.message}. Retrying…`;
          await new Promise((resolve) => setTimeout(resolve, 2000));
        }
      }
    })();
    try {
      await loading;
    } finally {
      loading = null;
    }
  }

  function follow(cursor) {
    if (stream) stream.close();
    stream = new EventSource(`${API}/stream?after=${encodeURIComponent(cursor)}`);
    stream.addEventListener('open', () => {
      model.connected = true;
      renderStatus();
    });
    stream.addEventListener('error', () => {
      model.connected = false;
      renderStatus();
    });
    stream.addEventListener('agent', (message) => {
      model.connected = true;
      model.agent = JSON.parse(message.data);
      // This agent's own view of the leader is the freshest: a leader it lost is shown gone.
      if (model.cluster && model.cluster.leader !== model.agent.leader) {
        model.cluster.leader = model.agent.leader;
        renderCluster();
        renderNodes();
      }
      renderStatus();
    });
    stream.addEventListener('cluster', (message) => {
      queue.push(JSON.parse(message.data));
      if (!flushing) {
        flushing = true;
        setTimeout(flush, 16);
      }
    });
    stream.addEventListener('resync', () => {
      stream.close();
      stream = null;
      load();
    });
  }

  const queue = [];
  let flushing = false;

  /** Applies the events received since the last flush, in one pass over the page. */
  function flush() {
    flushing = false;
    const events = queue.splice(0, queue.length);
    let refresh = false;
    let cluster = false;
    for (const event of events) {
      if (model.cluster && event.index > model.cluster.index) {
        model.cluster.index = event.index;
        cluster = true;
      }
      switch (event.action) {
        case 'task_created': {
          const service = model.services.get(event.service);
          const task = {
            id: event.id,
            service: event.service,
            service_id: service ? service.id : null,
            slot: event.slot,
            node: event.node,
            image: service ? service.image : '',
            state: 'new',
            desired: 'running',
            since: event.time,
            created: event.time,
            message: '',
          };
          model.tasks.set(task.id, task);
          upsertCard(task);
          refresh = true;
          break;
        }
        case 'task_state': {
          let task = model.tasks.get(event.id);
          if (!task) {
            const service = model.services.get(event.service);
            task = { id: event.id, service: event.service, image: service ? service.image : '', created: event.time };
            model.tasks.set(task.id, task);
          }
          Object.assign(task, {
            slot: event.slot,
            node: event.node,
            state: event.to,
            desired: event.desired,
            message: event.message,
            since: event.time,
          });
          if (shown(task)) {
            upsertCard(task);
          } else {
            model.tasks.delete(task.id);
            removeCard(task.id);
          }
          refresh = true;
          break;
        }
        case 'service_removed':
          for (const task of [...model.tasks.values()]) {
            if (task.service === event.name) {
              model.tasks.delete(task.id);
              removeCard(task.id);
            }
          }
          model.services.delete(event.name);
          refresh = true;
          break;
        case 'service_updated':
          model.imagesAfter.set(event.name, event.time);
          refresh = true;
          break;
        case 'leader_elected':
          if (model.cluster) {
            model.cluster.leader = event.leader;
            model.cluster.term = Math.max(model.cluster.term, event.term);
          }
          cluster = true;
          refresh = true;
          break;
        case 'node_removed':
          model.nodes.delete(event.id);
          refresh = true;
          break;
        default:
          refresh = true;
      }
    }
    if (cluster) renderCluster();
    if (refresh) refreshSoon();
    // A column for tasks without a node appears and goes with them.
    const unassigned = view.columns.get(UNASSIGNED);
    const shownEmpty = unassigned && unassigned.section.isConnected && unassigned.list.childElementCount === 0;
    const hiddenFull = unassigned && !unassigned.section.isConnected && unassigned.list.childElementCount > 0;
    if (shownEmpty || hiddenFull) renderNodes();
  }

  // The nodes' reservations, the services' counts and the cluster's managers follow from many
  // events; they are read again (a few rows, no tasks) at most every 300 ms while events come.
  let refreshTimer = null;
  let refreshing = false;

  function refreshSoon() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      if (refreshing) {
        refreshTimer = null;
        refreshSoon();
        return;
      }
      refreshing = true;
      const asked = Date.now();
      try {
        const overview = await getJSON(`${API}/overview?tasks=false`);
        takeParts(overview);
        for (const [name, since] of model.imagesAfter) {
          const service = model.services.get(name);
          if (!service) continue;
          for (const task of model.tasks.values()) {
            if (task.service === name && task.created >= since && task.image !== service.image) {
              task.image = service.image;
              upsertCard(task);
            }
          }
          if (since <= asked) model.imagesAfter.delete(name);
        }
        renderNodes();
        renderServices();
        renderCluster();
      } catch (_) {
        // The stream says when the agent or its managers are gone.
      } finally {
        refreshing = false;
        refreshTimer = null;
      }
    }, 300);
  }

  // Ages move on by themselves.
  setInterval(() => {
    for (const span of document.querySelectorAll('.card .age')) {
      span.textContent = age(Number(span.dataset.since));
    }
  }, 10000);

  // ---------------------------------------------------------------------------------------
  // A task's details and logs

  async function openTask(id) {
    const task = model.tasks.get(id);
    if (!task) return;
    const dialog = $('task-dialog');
    $('task-title').textContent = taskName(task);
    const fields = $('task-fields');
    const put = (entries) => {
      fields.replaceChildren();
      for (const [key, value] of entries) {
        fields.append(el('dt', null, key), el('dd', null, value));
      }
    };
    const basic = [
      ['Task', taskId(task.id)],
      ['Service', task.service],
      ['Slot', task.slot ?? 'global'],
      ['Node', nodeName(task.node)],
      ['Image', task.image],
      ['State', `${task.state} for ${age(task.since)} (desired: ${task.desired})`],
    ];
    if (task.message) basic.push(['Message', task.message]);
    put(basic);
    const logs = $('task-logs');
    logs.textContent = 'Reading…';
    if (!dialog.open) dialog.showModal();
    try {
      const detail = await getJSON(`${API}/tasks/${taskId(id)}`);
      const t = detail.task;
      const more = [
        ...basic,
        ['Created', new Date(t.created_at).toLocaleString()],
        ['Spec version', `${t.spec_version}${detail.current ? ' (current)' : ' (older)'}`],
      ];
      if (t.status.exit_code != null) more.push(['Exit code', t.status.exit_code]);
      if (t.status.container_id) more.push(['Container', t.status.container_id.slice(0, 12)]);
      put(more);
    } catch (error) {
      fields.append(el('dt', null, 'Details'), el('dd', null, `not available: ${error.message}`));
    }
    try {
      const params = new URLSearchParams({ service: task.service, task: taskId(id) });
      const answer = await getJSON(`${API}/logs?${params}`);
      logs.replaceChildren();
      for (const warning of answer.warnings) logs.append(el('span', 'stderr', `(${warning})\n`));
      for (const line of answer.lines) {
        logs.append(el('span', line.stream === 'stderr' ? 'stderr' : null, `${line.text}\n`));
      }
      if (!answer.lines.length && !answer.warnings.length) logs.textContent = '(no output)';
    } catch (error) {
      logs.textContent = `Logs not available: ${error.message}`;
    }
  }

  $('nodes').addEventListener('click', (event) => {
    const li = event.target.closest('li.task');
    if (li) openTask(Number(li.dataset.id));
  });

  load();
})();
