// An ordinary Node HTTP server, unmodified: it counts visits in memory and in a file, and both
// counts survive a checkpoint and a resume (try `--checkpoint-after 5s --out web.img`).
const http = require('node:http');
const fs = require('node:fs');

let visits = 0;
const server = http.createServer((req, res) => {
  visits++;
  fs.appendFileSync('/visits.log', `${new Date().toISOString()} ${req.method} ${req.url}\n`);
  const logged = fs.readFileSync('/visits.log', 'utf8').trim().split('\n').length;
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  res.end(`hello from a roaming guest: visit ${visits}, ${logged} lines in its own file\n`);
});

server.listen(Number(process.env.PORT ?? 8080), () => {
  console.log(`http server listening on ${server.address().port}`);
});
