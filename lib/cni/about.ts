/**
 * What cnikit says about itself, shared by the plugins' and cnitool's
 * version texts. Keep it in step with deno.json's "version".
 * @module
 */

/** The version string cnikit reports about itself. */
export const CNIKIT_VERSION = "0.1.0";
