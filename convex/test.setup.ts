/// <reference types="vite/client" />
// Module map for convex-test under vitest (not a Convex function module:
// the Convex bundler skips files with more than one dot in the name).
export const modules = import.meta.glob("./**/*.*s");
