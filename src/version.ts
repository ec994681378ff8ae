/** remora's version, printed by `remora version`. */
export const VERSION = "0.1.0";
