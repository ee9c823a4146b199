// The itineraries (steps and what a run does), fetched once per page load.

import { request } from '../api.js';

let cached = null;

export function itineraries() {
  if (!cached) {
    cached = request('GET', '/itineraries').catch((e) => {
      cached = null;
      throw e;
    });
  }
  return cached;
}
