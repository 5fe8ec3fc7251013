// The inspector page: rooms of the fleet and one room's content, awareness,
// history (diff, rollback) and storage. Every name and value from the server
// is inserted as text (textContent), never as markup.
'use strict'

/** An element with attributes and children (strings become text nodes). */
function el (tag, attrs, ...children) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === 'class') node.className = value
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value)
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value === true ? '' : String(value))
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue
    node.append(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child)
  }
  return node
}

function status (message) {
  document.getElementById('status').textContent = message || ''
}

async function getJson (path) {
  const response = await fetch(path, { credentials: 'same-origin', cache: 'no-store' })
  const body = await response.text()
  if (!response.ok) throw new Error(`${path}: ${response.status} ${body}`)
  return JSON.parse(body)
}

async function postJson (path, body) {
  const response = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body || {})
  })
  const text = await response.text()
  if (!response.ok) throw new Error(`${response.status} ${text}`)
  return text ? JSON.parse(text) : {}
}

function age (ms) {
  if (ms === null || ms === undefined) return '—'
  if (ms < 1000) return 'just now'
  const s = Math.round(ms / 1000)
  if (s < 120) return `${s} s ago`
  const m = Math.round(s / 60)
  if (m < 120) return `${m} min ago`
  return `${Math.round(m / 60)} h ago`
}

function when (ms) {
  return ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '—'
}

/** The room and docid the location's hash names, if any. */
function selected () {
  const params = new URLSearchParams(location.hash.slice(1))
  if (!params.has('room')) return null
  return { room: params.get('room'), docid: params.get('docid') || 'index' }
}

function roomHash (room, docid) {
  const params = new URLSearchParams({ room, docid })
  return '#' + params.toString()
}

function query (room, docid, extra) {
  return new URLSearchParams({ room, docid, ...(extra || {}) }).toString()
}

// ---------------------------------------------------------------- rooms list

let roomsShown = ''

function renderRooms (data) {
  const key = JSON.stringify(data)
  if (key === roomsShown) return
  roomsShown = key
  document.getElementById('fleet').textContent =
    `prefix ${data.prefix} · storage ${data.storage} · ${data.connections_here} connection(s) here`
  const body = document.querySelector('#rooms tbody')
  body.replaceChildren(...data.rooms.map((r) => el('tr', { 'data-key': r.key },
    el('td', {}, r.room === null
      ? el('span', { class: 'note' }, r.key)
      : el('a', { class: 'name room-link', href: roomHash(r.room, r.docid) }, r.room)),
    el('td', { class: 'name' }, r.docid === null ? '' : r.docid),
    el('td', { class: 'number' }, r.length),
    el('td', { title: r.last_id || '' }, age(r.age_ms)),
    el('td', {}, r.task_pending ? 'yes' : 'no'),
    el('td', { class: 'number' }, r.connections)
  )))
  if (data.rooms.length === 0) body.append(el('tr', {}, el('td', { colspan: 6, class: 'note' }, 'no document streams')))
  const more = document.getElementById('rooms-more')
  more.hidden = !data.more
  more.textContent = data.more ? `Only the first ${data.limit} streams are listed.` : ''
}

// ---------------------------------------------------------------- content tree

function deltaText (delta) {
  return (delta || []).map(([insert]) => (insert && 'any' in insert && typeof insert.any === 'string') ? insert.any : '').join('')
}

function attrsText (attrs) {
  return Object.entries(attrs || {}).map(([k, v]) => ` ${k}=${JSON.stringify(v && 'any' in v ? v.any : v)}`).join('')
}

/** One node of the canonical structure as a tree item. */
function node (label, value) {
  const head = label === null ? [] : [el('span', { class: 'key' }, label), ': ']
  if (value === null || typeof value !== 'object') return el('li', {}, ...head, el('span', { class: 'value' }, JSON.stringify(value)))
  if ('any' in value) return el('li', {}, ...head, el('span', { class: 'value' }, JSON.stringify(value.any)))
  if ('map' in value) {
    return el('li', {}, ...head, el('span', { class: 'kind' }, 'map'),
      el('ul', { class: 'tree' }, Object.entries(value.map).map(([k, v]) => node(k, v))))
  }
  if ('array' in value) {
    return el('li', {}, ...head, el('span', { class: 'kind' }, 'array'),
      el('ul', { class: 'tree' }, value.array.map((v, i) => node(String(i), v))))
  }
  if ('text' in value) return el('li', {}, ...head, el('span', { class: 'kind' }, 'text'), el('span', { class: 'text' }, deltaText(value.text)))
  if ('fragment' in value) {
    return el('li', {}, ...head, el('span', { class: 'kind' }, 'xml'),
      el('ul', { class: 'tree' }, value.fragment.map((v) => node(null, v))))
  }
  if ('element' in value) {
    return el('li', {}, ...head, el('span', { class: 'tag' }, `<${value.element}${attrsText(value.attrs)}>`),
      el('ul', { class: 'tree' }, value.children.map((v) => node(null, v))))
  }
  if ('xmltext' in value) return el('li', {}, ...head, el('span', { class: 'text' }, deltaText(value.xmltext)))
  if ('doc' in value) return el('li', {}, ...head, el('span', { class: 'kind' }, 'subdocument'), value.doc)
  return el('li', {}, ...head, JSON.stringify(value))
}

function renderContent (roots) {
  const kinds = Object.fromEntries(roots.kinds.map((k) => [k.name, k.kind]))
  const names = Object.keys(roots.structure)
  const target = document.getElementById('content')
  if (names.length === 0) {
    target.replaceChildren(el('p', { class: 'note' }, 'empty document'))
    return
  }
  target.replaceChildren(
    el('ul', { class: 'tree top' }, names.map((name) => {
      const item = node(name, roots.structure[name])
      item.setAttribute('data-root', name)
      item.setAttribute('data-kind', kinds[name] || '')
      return item
    })),
    el('h4', { class: 'note' }, 'as JSON'),
    el('pre', { id: 'content-json' }, JSON.stringify(roots.json, null, 2))
  )
}

// ---------------------------------------------------------------- awareness, storage

function renderAwareness (states) {
  const target = document.getElementById('awareness')
  if (states.length === 0) {
    target.replaceChildren(el('p', { class: 'note' }, 'no awareness states in the stream'))
    return
  }
  target.replaceChildren(el('table', {},
    el('thead', {}, el('tr', {}, el('th', {}, 'client'), el('th', {}, 'user'), el('th', {}, 'state'))),
    el('tbody', {}, states.map((s) => el('tr', { class: 'awareness-state' },
      el('td', { class: 'number' }, s.client),
      el('td', { class: 'name' }, (s.state && s.state.user && typeof s.state.user.name === 'string') ? s.state.user.name : ''),
      el('td', {}, el('pre', {}, JSON.stringify(s.state)))
    )))))
}

function renderStorage (storage) {
  const target = document.getElementById('storage')
  const items = storage.items
  target.replaceChildren(
    el('p', { class: 'note' }, `backend ${storage.backend}: ${items.length} item(s)`),
    items.length === 0
      ? el('span')
      : el('table', {},
        el('thead', {}, el('tr', {}, el('th', {}, 'item'), el('th', {}, 'bytes'))),
        el('tbody', {}, items.map((i) => el('tr', {}, el('td', { class: 'name' }, i.reference), el('td', { class: 'number' }, i.bytes))))))
}

// ---------------------------------------------------------------- history and diff

let pick = { a: null, b: 'current' }

/** The API path of a room, or null when its name is no single path segment. */
function apiPath (room, docid, action) {
  let parsed
  try { parsed = new URL('/' + room, 'http://inspector.invalid') } catch (_) { return null }
  if (room.includes('/') || parsed.pathname !== '/' + room || parsed.search || parsed.hash) return null
  return `/inspector/api/document/${room}/${action}?` + new URLSearchParams({ docid }).toString()
}

function renderHistory (view) {
  const target = document.getElementById('history')
  const versions = view.versions
  const rollbackPath = apiPath(view.room, view.docid, 'rollback')
  if (versions.length === 0) {
    target.replaceChildren(el('p', { class: 'note' }, 'no kept versions'))
    return
  }
  if (pick.a === null && versions.length > 0) pick.a = versions[0].version
  const chooser = (side, value) => el('input', {
    type: 'radio',
    name: 'diff-' + side,
    value: String(value),
    checked: String(pick[side]) === String(value),
    onchange: () => { pick[side] = value === 'current' ? 'current' : Number(value); showDiff(view) }
  })
  const rows = versions.slice().reverse().map((v) => el('tr', { class: 'version', 'data-version': v.version },
    el('td', {}, chooser('a', v.version)),
    el('td', {}, chooser('b', v.version)),
    el('td', { class: 'number' }, v.version),
    el('td', {}, when(v.timestamp)),
    el('td', { class: 'name' }, v.name || ''),
    el('td', {}, rollbackPath === null
      ? el('span', { class: 'note' }, 'not addressable by the API')
      : el('button', {
        type: 'button',
        class: 'rollback',
        'data-version': v.version,
        onclick: async () => {
          try {
            const result = await postJson(rollbackPath, { version: v.version })
            status(result.changed ? `rolled back to version ${v.version}` : `already at version ${v.version}'s content`)
          } catch (err) { status('rollback failed: ' + err.message) }
        }
      }, 'Roll back to this'))
  ))
  target.replaceChildren(el('table', { id: 'versions' },
    el('thead', {}, el('tr', {}, el('th', {}, 'A'), el('th', {}, 'B'), el('th', {}, 'version'), el('th', {}, 'kept'), el('th', {}, 'name'), el('th', {}, ''))),
    el('tbody', {},
      el('tr', {}, el('td', {}), el('td', {}, chooser('b', 'current')), el('td', { colspan: 4 }, 'current')),
      rows)))
}

/** The differences between two JSON values, by path. */
function jsonDiff (a, b, path, out) {
  if (JSON.stringify(a) === JSON.stringify(b)) return out
  const objects = a && b && typeof a === 'object' && typeof b === 'object' && Array.isArray(a) === Array.isArray(b)
  if (!objects) {
    if (a === undefined) out.push({ op: 'added', path, after: b })
    else if (b === undefined) out.push({ op: 'removed', path, before: a })
    else out.push({ op: 'changed', path, before: a, after: b })
    return out
  }
  const keys = Array.isArray(a)
    ? [...Array(Math.max(a.length, b.length)).keys()].map(String)
    : [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
  for (const key of keys) jsonDiff(a[key], b[key], path.concat(key), out)
  return out
}

let diffShown = ''

async function contentOf (view, side) {
  if (side === 'current') return view.roots.json
  const data = await getJson('/inspector/data/version?' + query(view.room, view.docid, { version: String(side) }))
  return data.roots.json
}

async function showDiff (view) {
  const target = document.getElementById('diff')
  if (pick.a === null) {
    target.replaceChildren(el('p', { class: 'note' }, 'no versions to compare'))
    return
  }
  try {
    const [a, b] = await Promise.all([contentOf(view, pick.a), contentOf(view, pick.b)])
    const changes = jsonDiff(a, b, [], [])
    const key = JSON.stringify([pick, changes])
    if (key === diffShown) return
    diffShown = key
    const label = (side) => side === 'current' ? 'current' : `version ${side}`
    target.replaceChildren(
      el('p', {}, `${label(pick.a)} → ${label(pick.b)}: ${changes.length} change(s)`),
      changes.length === 0
        ? el('span')
        : el('table', {}, el('tbody', {}, changes.map((c) => el('tr', { class: c.op },
          el('td', {}, c.op),
          el('td', { class: 'name' }, c.path.join('.') || '(document)'),
          el('td', {}, el('pre', {}, c.before === undefined ? '' : JSON.stringify(c.before))),
          el('td', {}, el('pre', {}, c.after === undefined ? '' : JSON.stringify(c.after)))
        )))))
  } catch (err) {
    target.replaceChildren(el('p', { class: 'note' }, 'diff unavailable: ' + err.message))
  }
}

// ---------------------------------------------------------------- room view

const shown = {}

function renderPart (name, data, render) {
  const key = JSON.stringify(data)
  if (shown[name] === key) return
  shown[name] = key
  render(data)
}

function renderRoom (view) {
  document.getElementById('room-name').textContent = view.room
  document.title = 'Inspector: ' + view.room
  renderPart('summary', [view.docid, view.key, view.stream, view.connections], () => {
    const row = (term, value) => [el('dt', {}, term), el('dd', {}, String(value))]
    document.getElementById('summary').replaceChildren(
      ...row('docid', view.docid),
      ...row('stream key', view.key),
      ...row('stream entries', view.stream.length),
      ...row('last entry', view.stream.last_id || '—'),
      ...row('connections here', view.connections))
  })
  renderPart('content', view.roots, renderContent)
  renderPart('awareness', view.awareness, renderAwareness)
  renderPart('storage', view.storage, renderStorage)
  renderPart('history', [view.room, view.docid, view.versions, pick], () => renderHistory(view))
  showDiff(view)
}

let current = null

async function refresh () {
  const room = selected()
  document.getElementById('rooms-view').hidden = room !== null
  document.getElementById('room-view').hidden = room === null
  try {
    if (room === null) {
      renderRooms(await getJson('/inspector/data/rooms'))
    } else {
      const view = await getJson('/inspector/data/room?' + query(room.room, room.docid))
      const still = selected()
      if (still && still.room === view.room && still.docid === view.docid) {
        current = view
        renderRoom(view)
      }
    }
    if (!document.getElementById('status').textContent.startsWith('rolled') &&
        !document.getElementById('status').textContent.startsWith('kept')) status('')
  } catch (err) {
    status(err.message)
  }
}

window.addEventListener('hashchange', () => {
  for (const key of Object.keys(shown)) delete shown[key]
  pick = { a: null, b: 'current' }
  diffShown = ''
  roomsShown = ''
  refresh()
})

document.getElementById('keep-version').addEventListener('click', async () => {
  if (!current) return
  const path = apiPath(current.room, current.docid, 'flush')
  if (path === null) { status('this room is not addressable by the API'); return }
  try {
    const result = await postJson(path, {})
    status(result.version ? `kept version ${result.version}` : 'kept: nothing changed since the last version')
  } catch (err) { status('keeping a version failed: ' + err.message) }
})

refresh()
setInterval(() => { refresh() }, 1000)
