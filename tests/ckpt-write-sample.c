/* Writes a checkpoint with known values for tests/read_safetensors.py to check:
 *   fc1/W          F32 (3x4)  i * 0.25 - 1
 *   fc1/b          F32 (3x1)  0.5 * i
 *   optim/m/fc1/W  F64 (3x4)  i / 3
 *   optim/step     F64 ()     42
 *   __metadata__   {"epoch": "7", "name": "café"} */
#include <stdio.h>

#include <tapegrad/checkpoint.h>

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.safetensors\n", argv[0]);
        return 2;
    }
    tg_params *model = tg_params_new(TG_F32), *m = tg_params_new(TG_F64);
    int64_t w[2] = {3, 4}, b[2] = {3, 1};
    tg_tensor *W = tg_params_add(model, "fc1/W", 2, w);
    tg_tensor *B = tg_params_add(model, "fc1/b", 2, b);
    tg_tensor *M = tg_params_add(m, "fc1/W", 2, w);
    if (!W || !B || !M) {
        fprintf(stderr, "params: %s\n", tg_params_error(model));
        return 1;
    }
    for (size_t i = 0; i < 12; i++) {
        ((float *)tg_tensor_data(W))[i] = (float)i * 0.25f - 1.0f;
        ((double *)tg_tensor_data(M))[i] = (double)i / 3.0;
    }
    for (size_t i = 0; i < 3; i++)
        ((float *)tg_tensor_data(B))[i] = 0.5f * (float)i;
    double step = 42;
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "", model);
    tg_state_dict_add_params(sd, "optim/m/", m);
    tg_state_dict_add_buffer(sd, "optim/step", TG_F64, 0, NULL, &step);
    tg_state_dict_set_metadata(sd, "epoch", "7");
    tg_state_dict_set_metadata(sd, "name", "caf\xc3\xa9");
    tg_status st = tg_state_dict_save(sd, argv[1]);
    if (st)
        fprintf(stderr, "%s\n", tg_state_dict_error(sd));
    tg_state_dict_free(sd);
    tg_params_free(model);
    tg_params_free(m);
    return st ? 1 : 0;
}
