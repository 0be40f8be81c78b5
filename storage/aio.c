/* aio: being written */
