// A .tar.gz of a package directory, written here (ustar headers and
// node's zlib) so the upload tests need no tar tool on the machine.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';

const BLOCK = 512;

function header(name: string, mode: number, size: number, type: '0' | '5'): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`${name}: names over 100 bytes are not needed here`);
  const h = Buffer.alloc(BLOCK);
  const octal = (value: number, width: number, at: number) =>
    h.write(`${value.toString(8).padStart(width - 1, '0')}\0`, at, width, 'latin1');
  h.write(name, 0, 100, 'utf8');
  octal(mode, 8, 100);
  octal(0, 8, 108); // uid
  octal(0, 8, 116); // gid
  octal(size, 12, 124);
  octal(0, 12, 136); // mtime: deterministic
  h.fill(' ', 148, 156); // the checksum counts itself as spaces
  h.write(type, 156, 1, 'latin1');
  h.write('ustar\0', 257, 6, 'latin1');
  h.write('00', 263, 2, 'latin1');
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return h;
}

/** `dir` as a .tar.gz with one top-level directory `top`, file modes kept. */
export function packageTarGz(dir: string, top: string): Buffer {
  const blocks: Buffer[] = [];
  const walk = (from: string, name: string) => {
    const stat = fs.statSync(from);
    if (stat.isDirectory()) {
      blocks.push(header(`${name}/`, stat.mode & 0o7777, 0, '5'));
      for (const entry of fs.readdirSync(from).sort()) walk(path.join(from, entry), `${name}/${entry}`);
    } else {
      const data = fs.readFileSync(from);
      blocks.push(header(name, stat.mode & 0o7777, data.length, '0'), data);
      const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
      if (pad) blocks.push(Buffer.alloc(pad));
    }
  };
  walk(dir, top);
  blocks.push(Buffer.alloc(2 * BLOCK));
  return gzipSync(Buffer.concat(blocks));
}
