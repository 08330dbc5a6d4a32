// An ordinary Node TCP echo server, unmodified: it runs as a Roam guest as it is.
const net = require('node:net');

const port = Number(process.env.PORT ?? 7000);
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.pipe(socket);
  socket.on('error', () => socket.destroy());
});
server.listen(port, () => console.log(`echo server listening on ${server.address().port}`));
