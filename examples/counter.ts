// A guest that counts: run it, checkpoint it, resume it elsewhere, and the count goes on.
let count = 0;
const started = Date.now();

class Greeter {
  #greeting: string;
  constructor(greeting: string) {
    this.#greeting = greeting;
  }
  greet(n: number): string {
    return `${this.#greeting} #${n}`;
  }
}
const greeter = new Greeter('tick');

const interval = setInterval(
  () => {
    count++;
    console.log(greeter.greet(count), `(${Math.round((Date.now() - started) / 100) / 10}s)`);
    if (count === Number(process.env.TICKS ?? 20)) {
      clearInterval(interval);
      console.log('done');
    }
  },
  Number(process.env.INTERVAL_MS ?? 200),
);
