/**
 * Backup images: the hedge for a host that leaves without a drain (paper section IV-C, "a backup
 * plan"). Every `backupEverySeconds` the proxy asks each running guest's host for an image of it,
 * a few at a time fleet-wide, and keeps the newest one per guest in its data directory. When a host
 * is lost, its guests resume from these images elsewhere (Proxy.restoreLost) and lose only the
 * work done since.
 *
 * Files: `<dir>/<guestId>.img` and its record `<guestId>.json`, each written to a temporary name
 * and renamed, so a crash leaves the previous image whole.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { RoamError } from '../errors.js';
import { verifyImage } from '../guest/image/index.js';
import { IMAGE_TIMEOUT_MS, readImage } from '../link/image-stream.js';
import type { LinkSession } from '../link/session.js';
import type { ImageOpenFrame } from '../wire/index.js';

const recordSchema = z.strictObject({
  guestId: z.uuid(), // names the files: never a path
  hostId: z.uuid(),
  takenAt: z.number().int().min(0),
  bytes: z.number().int().min(1),
});
/** The newest image of a guest: where it was taken, when, and its size. */
export type BackupRecord = z.infer<typeof recordSchema>;

export interface BackupCandidate {
  id: string;
  name: string;
  hostId: string;
  /** When this proxy first saw it running (its first image is due a full interval after). */
  since: number;
}

export interface BackupPorts {
  /** Running guests (not moving), each with the host it runs on. */
  candidates(): Array<Omit<BackupCandidate, 'since'>>;
  /** Asks a host for an image of a guest; false if the host cannot be reached now. */
  request(hostId: string, guestId: string): boolean;
  event(kind: string, message: string, ids: { hostId?: string; guestId?: string }, data?: unknown): void;
}

/**
 * Which guests to image now: those whose newest image (or, without one, whose start where they run)
 * is at least `everyMs` old, oldest first, as many as `budget` allows. Pure.
 */
export function imagesDue(
  guests: readonly BackupCandidate[],
  takenAt: (guestId: string) => number | undefined,
  now: number,
  everyMs: number,
  budget: number,
): BackupCandidate[] {
  if (everyMs <= 0 || budget <= 0) return [];
  const due: Array<{ guest: BackupCandidate; since: number }> = [];
  for (const guest of guests) {
    const since = Math.max(takenAt(guest.id) ?? 0, guest.since);
    if (now - since >= everyMs) due.push({ guest, since });
  }
  due.sort((a, b) => a.since - b.since);
  return due.slice(0, budget).map((d) => d.guest);
}

export class BackupImages {
  private readonly records = new Map<string, BackupRecord>();
  /** Images asked for and not yet in, by guest. */
  private readonly asked = new Map<string, { hostId: string; timer: NodeJS.Timeout }>();
  /** Guests whose last attempt failed (said once, until one succeeds). */
  private readonly failing = new Set<string>();
  /** When each guest was first seen running: moves do not put its first image off. */
  private readonly firstSeen = new Map<string, number>();

  constructor(
    private readonly dir: string,
    private readonly ports: BackupPorts,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const file of readdirSync(dir)) {
      if (!file.endsWith('.json')) continue;
      try {
        const record = recordSchema.parse(JSON.parse(readFileSync(join(dir, file), 'utf8')));
        this.records.set(record.guestId, record);
      } catch {
        // A damaged record: its image cannot be trusted to be the guest's newest; leave it unused.
      }
    }
  }

  /** Asks for the images that are due, within the fleet-wide budget. */
  tick(now: number, everySeconds: number, maxConcurrent: number): void {
    const candidates: BackupCandidate[] = [];
    for (const g of this.ports.candidates()) {
      if (this.asked.has(g.id)) continue;
      let since = this.firstSeen.get(g.id);
      if (since === undefined) this.firstSeen.set(g.id, (since = now));
      candidates.push({ ...g, since });
    }
    const due = imagesDue(
      candidates,
      (id) => this.records.get(id)?.takenAt,
      now,
      everySeconds * 1000,
      maxConcurrent - this.asked.size,
    );
    for (const guest of due) {
      if (!this.ports.request(guest.hostId, guest.id)) continue;
      const timer = setTimeout(
        () => this.failed(guest.hostId, guest.id, 'ROAM_ERR_TIMEOUT', `no image within ${IMAGE_TIMEOUT_MS / 1000} s`),
        IMAGE_TIMEOUT_MS,
      );
      this.asked.set(guest.id, { hostId: guest.hostId, timer });
    }
  }

  /** The newest image's record, if the guest has one. */
  record(guestId: string): BackupRecord | undefined {
    return this.records.get(guestId);
  }

  /** The newest image of a guest. */
  read(guestId: string): Promise<Uint8Array> {
    return readFile(this.imagePath(guestId));
  }

  /**
   * An image stream from a host: taken only if this proxy asked that host for that guest's image.
   * The image is checked (framing, checksum, whose it is) before it replaces the previous one.
   */
  async receive(hostId: string, session: LinkSession, frame: ImageOpenFrame): Promise<void> {
    const asked = this.asked.get(frame.guest);
    if (!asked || asked.hostId !== hostId) {
      session.reject(frame, 'ROAM_ERR_CONFLICT', `no image of guest ${frame.guest} was asked of this host`);
      return;
    }
    const stream = session.accept(frame);
    try {
      const bytes = await readImage(stream, frame.bytes, IMAGE_TIMEOUT_MS);
      const { meta } = await verifyImage(bytes);
      if (meta.guestId !== frame.guest) {
        throw new RoamError('ROAM_ERR_IMAGE_MALFORMED', `the image is of guest ${meta.guestId}, not ${frame.guest}`);
      }
      if (this.asked.get(frame.guest) !== asked) return; // forgotten meanwhile (stopped, or timed out)
      const record: BackupRecord = { guestId: frame.guest, hostId, takenAt: Date.now(), bytes: bytes.length };
      await this.writeAtomically(this.imagePath(frame.guest), bytes);
      await this.writeAtomically(join(this.dir, `${frame.guest}.json`), Buffer.from(JSON.stringify(record)));
      this.settle(frame.guest);
      this.records.set(frame.guest, record);
      this.failing.delete(frame.guest);
    } catch (err) {
      const e = err as Error & { code?: string };
      this.failed(hostId, frame.guest, e.code ?? 'ROAM_ERR_IMAGE_TRANSFER', e.message);
    }
  }

  /** The host could not image the guest (or did not in time): try again at the next interval. */
  failed(hostId: string, guestId: string, code: string, message: string): void {
    const asked = this.asked.get(guestId);
    if (!asked || asked.hostId !== hostId) return;
    this.settle(guestId);
    if (this.failing.has(guestId)) return;
    this.failing.add(guestId);
    this.ports.event('guest.backup', `no backup image of this guest this time: ${code}: ${message}`, {
      hostId,
      guestId,
    });
  }

  /** The guest is gone for good (stopped, exited, failed): its image goes too. */
  forget(guestId: string): void {
    this.settle(guestId);
    this.failing.delete(guestId);
    this.firstSeen.delete(guestId);
    if (!this.records.delete(guestId)) return;
    void rm(this.imagePath(guestId), { force: true });
    void rm(join(this.dir, `${guestId}.json`), { force: true });
  }

  /** A host went away: images it was asked for will not come. */
  hostGone(hostId: string): void {
    for (const [guestId, asked] of this.asked) if (asked.hostId === hostId) this.settle(guestId);
  }

  close(): void {
    for (const { timer } of this.asked.values()) clearTimeout(timer);
    this.asked.clear();
  }

  private settle(guestId: string): void {
    clearTimeout(this.asked.get(guestId)?.timer);
    this.asked.delete(guestId);
  }

  private imagePath(guestId: string): string {
    return join(this.dir, `${guestId}.img`);
  }

  private async writeAtomically(path: string, bytes: Uint8Array): Promise<void> {
    const temporary = `${path}.${process.pid}.tmp`;
    await writeFile(temporary, bytes, { mode: 0o600 });
    await rename(temporary, path);
  }
}
