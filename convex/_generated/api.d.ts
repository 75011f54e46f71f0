/* eslint-disable */
  /**
   * Generated `api` utility.
   *
   * THIS CODE IS AUTOMATICALLY GENERATED.
   *
   * To regenerate, run `npx convex dev`.
   * @module
   */
  
  import type { ApiFromModules, FilterApi, FunctionReference } from "convex/server";
  import type * as active from "../active.js";
import type * as check from "../check.js";
import type * as client from "../client.js";
import type * as inbox from "../inbox.js";
import type * as projector from "../projector.js";
import type * as runs from "../runs.js";
import type * as threads from "../threads.js";
import type * as timelines from "../timelines.js";
import type * as validators from "../validators.js";
import type * as workers from "../workers.js";

  /**
   * A utility for referencing Convex functions in your app's API.
   *
   * Usage:
   * ```js
   * const myFunctionReference = api.myModule.myFunction;
   * ```
   */
  declare const fullApi: ApiFromModules<{
    "active": typeof active,
"check": typeof check,
"client": typeof client,
"inbox": typeof inbox,
"projector": typeof projector,
"runs": typeof runs,
"threads": typeof threads,
"timelines": typeof timelines,
"validators": typeof validators,
"workers": typeof workers,
  }>;
  export declare const api: FilterApi<typeof fullApi, FunctionReference<any, "public">>;
  export declare const internal: FilterApi<typeof fullApi, FunctionReference<any, "internal">>;
  