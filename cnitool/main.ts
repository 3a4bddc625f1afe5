/** cnitool: placeholder until the runtime lands. @module */
export function cnitoolMain(_args: string[]): Promise<number> {
  console.error("cnitool: not built yet");
  return Promise.resolve(1);
}
