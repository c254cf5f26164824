// The Node peer: Meteor's ddp-server (mongodb-livedata-server) with the same handlers the
// benchmark calls on comet: `echo` and the publications `bench.empty` and `bench.docs`.
'use strict';
const http = require('node:http');
const { DDPServer } = require('mongodb-livedata-server');

const port = Number(process.env.PORT || 4000);
const httpServer = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const ddp = new DDPServer({}, httpServer);

ddp.methods({
  echo: async (value) => value,
});

ddp.publish({
  'bench.empty': async function () {
    this.ready();
  },
  // Fifty small documents, the same for every subscriber.
  'bench.docs': async function () {
    for (let i = 0; i < 50; i++) this.added('docs', `d${i}`, { n: i, text: 'hello world, this is a document' });
    this.ready();
  },
});

// Fan-out (S3): every `bench.room` subscriber gets each `bench.send` as a document.
const room = new Set();
let nextId = 0;
ddp.publish({
  'bench.room': async function () {
    room.add(this);
    this.onStop(() => room.delete(this));
    this.ready();
  },
});
ddp.methods({
  'bench.send': async (text, ts) => {
    const id = `m${nextId++}`;
    for (const sub of room) sub.added('messages', id, { text, ts });
  },
});

httpServer.listen(port, '127.0.0.1', () => {
  process.stderr.write(`peer listening on ${port}\n`);
});
