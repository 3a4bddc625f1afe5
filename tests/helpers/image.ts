/**
 * A container image made on this machine, with no registry: Debian's
 * static busybox (busybox-static) as the root file system, a web page under
 * /www, as an OCI image archive that podman and containerd both load.
 * @module
 */

import { sh } from "./netns.ts";

/** The static busybox the image is made of. */
export const BUSYBOX = "/bin/busybox";

/** Why no image can be made here, or undefined when it can. */
export const noImage: string | undefined = (() => {
  try {
    const head = Deno.readFileSync(BUSYBOX).subarray(0, 4);
    return head[0] === 0x7f && head[1] === 0x45 ? undefined : `${BUSYBOX} is not an ELF binary`;
  } catch {
    return `no ${BUSYBOX} (Debian: busybox-static)`;
  }
})();

/** What the image's web server answers. */
export const PAGE = "hello from a cnikit container\n";

/** The image's name. */
export const IMAGE = "localhost/cnikit-busybox:test";

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Writes an OCI image archive of busybox to `dir/image.tar` (layer, config,
 * manifest, index, all uncompressed) and returns its path. The image's
 * command serves /www on port 80.
 */
export async function buildImage(dir: string): Promise<string> {
  const rootfs = `${dir}/rootfs`;
  await Deno.mkdir(`${rootfs}/bin`, { recursive: true });
  await Deno.mkdir(`${rootfs}/www`, { recursive: true });
  await Deno.copyFile(BUSYBOX, `${rootfs}/bin/busybox`);
  for (const applet of ["sh", "httpd", "ip", "sleep", "cat"]) {
    await Deno.symlink("busybox", `${rootfs}/bin/${applet}`);
  }
  await Deno.writeTextFile(`${rootfs}/www/index.html`, PAGE);
  await sh("tar", ["-C", rootfs, "--owner=0", "--group=0", "-cf", `${dir}/layer.tar`, "."]);

  const oci = `${dir}/oci`;
  await Deno.mkdir(`${oci}/blobs/sha256`, { recursive: true });
  const blob = async (data: Uint8Array<ArrayBuffer>, mediaType: string) => {
    const digest = await sha256(data);
    await Deno.writeFile(`${oci}/blobs/sha256/${digest}`, data);
    return { mediaType, digest: `sha256:${digest}`, size: data.length };
  };
  const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const layer = await blob(
    await Deno.readFile(`${dir}/layer.tar`),
    "application/vnd.oci.image.layer.v1.tar",
  );
  const config = await blob(
    json({
      architecture: "amd64",
      os: "linux",
      config: { Cmd: ["/bin/httpd", "-f", "-p", "80", "-h", "/www"], WorkingDir: "/" },
      rootfs: { type: "layers", diff_ids: [layer.digest] },
    }),
    "application/vnd.oci.image.config.v1+json",
  );
  const manifest = await blob(
    json({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config,
      layers: [layer],
    }),
    "application/vnd.oci.image.manifest.v1+json",
  );
  await Deno.writeTextFile(`${oci}/oci-layout`, JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await Deno.writeTextFile(
    `${oci}/index.json`,
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{
        ...manifest,
        annotations: {
          "org.opencontainers.image.ref.name": IMAGE,
          "io.containerd.image.name": IMAGE,
        },
      }],
    }),
  );
  await sh("tar", ["-C", oci, "--owner=0", "--group=0", "-cf", `${dir}/image.tar`, "."]);
  return `${dir}/image.tar`;
}
