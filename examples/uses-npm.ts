// A guest that uses a third-party npm package (bundled from node_modules at `roam guest run`).
import ms from 'ms';

const intervals = ['1.5s', '2m', '1h', '3d'].map((text) => `${text} = ${ms(text)} ms`);
console.log(intervals.join(', '));
console.log(`and ${ms(90_000, { long: true })} the other way`);
