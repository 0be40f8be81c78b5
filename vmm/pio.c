/* pio: being written */
