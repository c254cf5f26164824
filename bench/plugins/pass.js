'use strict';
// The benchmark's pass-through plugin in Node: MessageWillBePosted lets every message
// through (`PLUGIN=node bench/run.sh`); what it measures is what one plugin's round trip
// adds to sendMessage.
const { Plugin, allow } = require('./comet-plugin');

new Plugin().hook('MessageWillBePosted', () => allow()).run();
