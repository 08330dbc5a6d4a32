// A guest that keeps state and talks three ways; the migration tests and the demo move it around.
//   TCP 7000: lines "SEQ DATA\n"; it answers "SEQ HASH TOTAL\n" (FNV-1a of DATA, records so far).
//   HTTP 8080: GET / answers {"records":TOTAL,"hits":N,"now":Date.now(),"ticks":T} (keep-alive);
//              GET /page is a small web page that shows them live (what `roam demo` points to).
//   UDP 9000: a datagram "X" comes back as "X TOTAL".
const net = require('net');
const http = require('http');
const dgram = require('dgram');

let total = 0;
let hits = 0;
// A counter driven by a timer: it keeps its cadence across moves (timers keep their remaining time).
let ticks = 0;
setInterval(() => ticks++, 10);

function fnv1a(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

net
  .createServer((socket) => {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      buffered += chunk;
      let end;
      while ((end = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        const space = line.indexOf(' ');
        total++;
        socket.write(`${line.slice(0, space)} ${fnv1a(line.slice(space + 1))} ${total}\n`);
      }
    });
    socket.on('error', () => {});
  })
  .listen(Number(process.env.TCP_PORT || 7000), () => console.log('records: tcp listening'));

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>records</title>
<style>body{font:16px system-ui,sans-serif;margin:40px;background:#0f131a;color:#dde3ee}b{color:#4fc3f7;font-size:28px}</style>
</head><body><h1>The records guest</h1>
<p>It keeps running while Roam moves it between hosts; these numbers never go back.</p>
<p>records <b id="records">-</b> &nbsp; page hits <b id="hits">-</b> &nbsp; timer ticks <b id="ticks">-</b></p>
<p>guest clock <span id="now">-</span></p>
<script>
async function tick(){try{const r=await fetch('/');const j=await r.json();
for(const k of ['records','hits','ticks'])document.getElementById(k).textContent=j[k];
document.getElementById('now').textContent=new Date(j.now).toISOString();}catch(e){}
setTimeout(tick,500);}
tick();
</script></body></html>
`;

http
  .createServer((req, res) => {
    if (req.url === '/page') {
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(PAGE);
      return;
    }
    hits++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ records: total, hits, now: Date.now(), ticks }));
  })
  .listen(Number(process.env.HTTP_PORT || 8080), () => console.log('records: http listening'));

const udp = dgram.createSocket('udp4');
udp.on('message', (msg, rinfo) => udp.send(`${msg} ${total}`, rinfo.port, rinfo.address));
udp.bind(Number(process.env.UDP_PORT || 9000), () => console.log('records: udp listening'));
