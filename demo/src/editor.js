// The demo editor: ProseMirror on a Yjs XML fragment (y-prosemirror), synced
// through y-websocket with the server the page names, with live cursors of the
// other windows (awareness). Bundled into server/assets/demo.js by
// demo/build.mjs; the `websocket demo` command serves it.
//
// Query parameters: ?room=NAME (default "demo"), ?server=ws://HOST:PORT (default:
// the instance that serves the page), ?name=WHO (default: a random name).
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { ySyncPlugin, yCursorPlugin, yUndoPlugin, undo, redo } from 'y-prosemirror'
import { EditorState } from 'prosemirror-state'
import { EditorView } from 'prosemirror-view'
import { schema } from 'prosemirror-schema-basic'
import { keymap } from 'prosemirror-keymap'
import { baseKeymap, toggleMark } from 'prosemirror-commands'

const COLORS = ['#d1495b', '#00798c', '#edae49', '#30638e', '#6a4c93', '#2a9d8f']
const NAMES = ['Ada', 'Grace', 'Alan', 'Barbara', 'Edsger', 'Frances', 'Ken', 'Radia']

function text (id, value) {
  const node = document.getElementById(id)
  if (node) node.textContent = value
}

async function start () {
  const params = new URLSearchParams(location.search)
  const config = await fetch('/config.json', { cache: 'no-store' }).then((r) => r.json())
  const server = params.get('server') || `ws://${location.hostname}:${config.port}`
  const room = params.get('room') || 'demo'
  const name = params.get('name') || NAMES[Math.floor(Math.random() * NAMES.length)]
  const color = COLORS[Math.floor(Math.random() * COLORS.length)]

  text('server', server)
  text('room', room)
  text('user', name)
  const peer = document.getElementById('peer')
  if (peer && config.peer) {
    const link = new URL(location.href)
    link.searchParams.set('server', config.peer)
    link.searchParams.delete('name')
    peer.href = link.toString()
    peer.textContent = 'open this room through ' + config.peer
    peer.hidden = false
  }

  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(server, room, ydoc, { disableBc: true })
  provider.awareness.setLocalStateField('user', { name, color })
  provider.on('status', ({ status }) => text('connection', status))
  const fragment = ydoc.getXmlFragment('prosemirror')

  const view = new EditorView(document.getElementById('editor'), {
    state: EditorState.create({
      schema,
      plugins: [
        ySyncPlugin(fragment),
        yCursorPlugin(provider.awareness),
        yUndoPlugin(),
        keymap({ 'Mod-z': undo, 'Mod-y': redo, 'Mod-Shift-z': redo, 'Mod-b': toggleMark(schema.marks.strong), 'Mod-i': toggleMark(schema.marks.em) }),
        keymap(baseKeymap)
      ]
    })
  })
  view.focus()
  // For people poking at the page from the console, and for the browser test.
  window.demo = { ydoc, provider, view, fragment, name }
}

start().catch((err) => {
  text('connection', 'failed: ' + err.message)
  console.error(err)
})
