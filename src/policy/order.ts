/**
 * A stable sort of indices by a numeric key, largest first, without a comparator function: the
 * rankings sort every host of the table (10,000 in the benchmark) in each decision round, where
 * calling a closure for each of the n log n comparisons costs more than the rest of the round.
 */

/** Runs this short are sorted by insertion before merging. */
const RUN = 16;

/**
 * Sorts `items` (indices into `key`) in place by `key[item]`, largest first. Equal keys keep their
 * order (a stable sort), and the order is that of `(a, b) => key[b] - key[a]` with
 * Array.prototype.sort: 0 and -0 are equal. Keys must not be NaN.
 */
export function sortByKeyDescending(items: Int32Array, key: Float64Array): void {
  const n = items.length;
  for (let start = 0; start < n; start += RUN) insertionSort(items, key, start, Math.min(n, start + RUN));
  if (n <= RUN) return;
  let from = items;
  let to: Int32Array = new Int32Array(n);
  for (let width = RUN; width < n; width *= 2) {
    for (let lo = 0; lo < n; lo += 2 * width)
      merge(from, to, key, lo, Math.min(n, lo + width), Math.min(n, lo + 2 * width));
    const swap = from;
    from = to;
    to = swap;
  }
  if (from !== items) items.set(from);
}

function insertionSort(items: Int32Array, key: Float64Array, lo: number, hi: number): void {
  for (let i = lo + 1; i < hi; i++) {
    const item = items[i] ?? 0;
    const k = key[item] ?? 0;
    let j = i - 1;
    // Move ahead only of strictly smaller keys: equal keys stay in order.
    while (j >= lo && (key[items[j] ?? 0] ?? 0) < k) {
      items[j + 1] = items[j] ?? 0;
      j--;
    }
    items[j + 1] = item;
  }
}

/** Merges the sorted runs from[lo, mid) and from[mid, hi) into to[lo, hi); ties from the left run first. */
function merge(from: Int32Array, to: Int32Array, key: Float64Array, lo: number, mid: number, hi: number): void {
  let i = lo;
  let j = mid;
  let k = lo;
  while (i < mid && j < hi) {
    const a = from[i] ?? 0;
    const b = from[j] ?? 0;
    if ((key[b] ?? 0) > (key[a] ?? 0)) {
      to[k++] = b;
      j++;
    } else {
      to[k++] = a;
      i++;
    }
  }
  while (i < mid) to[k++] = from[i++] ?? 0;
  while (j < hi) to[k++] = from[j++] ?? 0;
}
